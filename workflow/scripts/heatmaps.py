"""Rule heatmaps: activation of N_k's top neurons over each sample image of k (Fig. 3)."""

from kneurons.jobs import start_job
from kneurons.rules.figures import heatmaps

start_job(snakemake)
heatmaps(
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    snakemake.input.activations,
    snakemake.input.sets,
    snakemake.params.name,
    snakemake.params.top,
    snakemake.output[0],
)
