"""Rule evaluate_captioner: held-out mention precision/recall, removal constraints and FFN ablation -> eval.json."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.rules.synth import evaluate_captioner

log = start_job(snakemake)
evaluate_captioner(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.params.prompt,
    snakemake.params.quality,
    log,
    snakemake.log[0],
    snakemake.output[0],
)
