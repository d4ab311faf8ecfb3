"""Rule neurons_ours: candidates C^k and knowledge neurons N_k of each sample of k."""

from kneurons.jobs import start_job
from kneurons.neuronsets import ours_stage

start_job(snakemake)
ours_stage(
    snakemake.input.activations,
    snakemake.input.gradcam,
    snakemake.params.thresholds,
    snakemake.params.exclude_last_layer,
    snakemake.output[0],
)
