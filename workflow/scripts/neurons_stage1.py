"""Rule neurons_stage1: the stage-1 control of ours' sets (|N_k| random units of each sample's C^k)."""

from kneurons.jobs import start_job
from kneurons.neuronsets import stage1_stage

start_job(snakemake)
stage1_stage(snakemake.input.ours, snakemake.input.activations, snakemake.output[0])
