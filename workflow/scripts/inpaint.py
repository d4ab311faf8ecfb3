"""Rule inpaint: Telea-inpaint knowledge k out of each of its candidate images."""

from kneurons.jobs import start_job
from kneurons.rules.samples import inpaint

start_job(snakemake)
inpaint(
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.params.name,
    snakemake.input.checked,
    snakemake.params.options,
    snakemake.output.candidates,
    snakemake.output.images,
)
