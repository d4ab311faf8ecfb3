"""Rule decoded_neurons: the top tokens W_U · W_down[:, i] promotes for every neuron of every set."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.rules.figures import decoded_neurons

start_job(snakemake)
decoded_neurons(
    load_job_model(snakemake),
    list(snakemake.input.sets),
    snakemake.input.selected,
    snakemake.params.top,
    snakemake.output.csv,
    snakemake.output.md,
)
