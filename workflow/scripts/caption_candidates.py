"""Rule caption_candidates: caption the original and the inpainted image of every candidate (batched)."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.protocol import Captioning
from kneurons.rules.samples import caption_candidates

start_job(snakemake)
caption_candidates(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.candidates,
    Captioning.from_params(snakemake.params),
    snakemake.output[0],
)
