"""Rule synth_split: write one synthetic COCO-format split (JPEGs + instances JSON)."""

from kneurons.jobs import start_job
from kneurons.synth.scenes import write_split

log = start_job(snakemake)
s = snakemake.params.synth
write_split(
    out_json=snakemake.output.annotations,
    image_dir=snakemake.output.images,
    n_images=snakemake.params.n_images,
    seed=snakemake.params.seed,
    image_size=s["image_size"],
    max_objects=s["max_objects"],
    margin=s["margin"],
    jpeg_quality=s["jpeg_quality"],
)
log.info("wrote %d images", snakemake.params.n_images)
