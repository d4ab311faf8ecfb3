"""Rule synth_split: write one synthetic COCO-format split (JPEGs + instances JSON)."""

from kneurons.jobs import start_job
from kneurons.rules.synth import synth_split

log = start_job(snakemake)
synth_split(
    snakemake.params.n_images,
    snakemake.params.seed,
    snakemake.params.synth,
    snakemake.output.annotations,
    snakemake.output.images,
)
log.info("wrote %d images", snakemake.params.n_images)
