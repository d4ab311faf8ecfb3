"""Rule pairwise: paired differences between methods (and ours against its stage-1 control), with intervals."""

from kneurons.jobs import start_job
from kneurons.rules.perturb import pairwise

start_job(snakemake)
pairwise(
    list(snakemake.input.perturbations),
    list(snakemake.input.restorations),
    snakemake.output.csv,
    snakemake.output.md,
)
