"""Rule neurons_baseline: Schwettmann's, Pan's or integrated gradients' top-|N_k| neurons of each sample of k."""

from kneurons.jobs import start_job
from kneurons.rules.neurons import neurons_baseline

start_job(snakemake)
neurons_baseline(
    snakemake.wildcards.baseline,
    snakemake.input.ours,
    snakemake.input,
    snakemake.params.exclude_last_layer,
    snakemake.output[0],
)
