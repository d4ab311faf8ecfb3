"""Rule table2: S_se, S_re, S_mean (and S_hal) per method, knowledge and level, with bootstrap intervals."""

from kneurons.jobs import start_job
from kneurons.rules.perturb import table2

start_job(snakemake)
table2(
    list(snakemake.input.perturbations),
    snakemake.input.knowledge,
    snakemake.input.samples,
    snakemake.output.csv,
    snakemake.output.md,
)
