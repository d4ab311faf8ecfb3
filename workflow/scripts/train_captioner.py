"""Rule train_captioner: train the embedded default's LLaVA captioner on the synthetic training split."""

from kneurons.jobs import console, start_job
from kneurons.rules.synth import train_captioner

log = start_job(snakemake)
summary = train_captioner(
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.params.prompt,
    snakemake.params.settings,
    snakemake.params.record,
    snakemake.output[0],
    log=console,  # the progress line on the console, not only in the log
)
log.info("trained: %s", summary)
