"""Rule neurons_baseline: Schwettmann's or Pan's top-|N_k| neurons of each sample of k."""

from kneurons.jobs import start_job
from kneurons.neuronsets import baseline_stage

start_job(snakemake)
baseline_stage(
    snakemake.wildcards.baseline,
    snakemake.input.ours,
    snakemake.input.activations,
    snakemake.input.gradcam,
    snakemake.params.exclude_last_layer,
    snakemake.output[0],
)
