"""Rule neuron_summary: one TSV row per neuron set (method, knowledge, sample)."""

from kneurons.jobs import start_job
from kneurons.rules.neurons import neuron_summary

start_job(snakemake)
neuron_summary(list(snakemake.input), snakemake.output[0])
