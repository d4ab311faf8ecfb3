"""Rule neurons_ours: candidates C^k and knowledge neurons N_k of each sample of k."""

from kneurons.jobs import start_job
from kneurons.rules.neurons import neurons_ours

start_job(snakemake)
neurons_ours(
    snakemake.input,
    snakemake.params.thresholds,
    snakemake.params.exclude_last_layer,
    snakemake.output[0],
)
