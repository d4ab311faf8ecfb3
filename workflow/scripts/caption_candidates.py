"""Rule caption_candidates: caption the original and the inpainted image of every candidate (batched)."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.stages import caption_stage

start_job(snakemake)
caption_stage(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.candidates,
    snakemake.params.prompt,
    snakemake.output[0],
    **snakemake.params.generation,
)
