"""Rule gradcam: dump GradCAM g of each sample of k for its first caption token (full g or its statistics)."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.stages import gradcam_stage

start_job(snakemake)
gradcam_stage(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    snakemake.params.prompt,
    snakemake.params.synonyms,
    snakemake.output[0],
    mode=snakemake.params.dumps["mode"],
)
