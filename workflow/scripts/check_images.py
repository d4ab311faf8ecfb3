"""Rule check_images: every candidate image of the run checked once (exists, decodes completely, annotated size)."""

from kneurons.jobs import console, start_job
from kneurons.rules.samples import check_images

start_job(snakemake)
bad = check_images(
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.knowledge,
    snakemake.params.max_candidates,
    snakemake.params.bad_images,
    snakemake.output[0],
)
if bad:
    console(f"{len(bad)} bad image(s) skipped (samples.bad_images: skip): their candidates are rejected")
