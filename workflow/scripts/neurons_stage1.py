"""Rule neurons_stage1: the stage-1 control of ours' sets (|N_k| random units of each sample's C^k)."""

from kneurons.jobs import start_job
from kneurons.rules.neurons import neurons_stage1

start_job(snakemake)
neurons_stage1(snakemake.input.ours, snakemake.input, snakemake.output[0])
