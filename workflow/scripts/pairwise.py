"""Rule pairwise: paired differences between methods (and ours against its stage-1 control), with intervals."""

from kneurons.comparisons import pairwise_stage
from kneurons.jobs import start_job

start_job(snakemake)
pairwise_stage(
    list(snakemake.input.perturbations),
    list(snakemake.input.restorations),
    snakemake.output.csv,
    snakemake.output.md,
)
