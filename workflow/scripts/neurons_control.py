"""Rule neurons_control: the random control of one method's sets (its per-layer counts, units drawn at random)."""

from kneurons.jobs import start_job
from kneurons.neuronsets import control_stage

start_job(snakemake)
control_stage(snakemake.wildcards.method, snakemake.input.sets, snakemake.input.gradcam, snakemake.output[0])
