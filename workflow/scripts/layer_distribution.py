"""Rule layer_distribution: each method's neurons per decoder layer (Fig. 2)."""

from kneurons.jobs import start_job
from kneurons.rules.figures import layer_distribution

start_job(snakemake)
layer_distribution(snakemake.input[0], snakemake.output.png, snakemake.output.csv, snakemake.output.md)
