"""Rule inpaint: Telea-inpaint knowledge k out of each of its candidate images."""

from kneurons.jobs import start_job
from kneurons.selection import inpaint_stage

start_job(snakemake)
o = snakemake.params.options
inpaint_stage(
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.params.name,
    checked=snakemake.input.checked,
    out_tsv=snakemake.output.candidates,
    out_dir=snakemake.output.images,
    max_candidates=o["max_candidates"],
    source=o["mask"],
    dilate=o["dilate"],
    radius=o["radius"],
)
