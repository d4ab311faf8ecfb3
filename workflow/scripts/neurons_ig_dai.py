"""Rule neurons_ig_dai: Dai et al.'s own selection of each sample of k (integrated gradients over t x the largest)."""

from kneurons.jobs import start_job
from kneurons.rules.neurons import neurons_ig_dai

start_job(snakemake)
neurons_ig_dai(
    snakemake.input.ours,
    snakemake.input,
    snakemake.params.share,
    snakemake.params.exclude_last_layer,
    snakemake.output[0],
)
