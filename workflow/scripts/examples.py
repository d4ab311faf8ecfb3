"""Rule examples (Table I): original, inpainted and each method's noisy caption of each target's first sample."""

from kneurons.jobs import start_job
from kneurons.reporting import examples_stage

start_job(snakemake)
examples_stage(
    list(snakemake.input.perturbations),
    snakemake.input.selected,
    snakemake.params.methods,
    snakemake.params.level,
    snakemake.output.csv,
    snakemake.output.md,
)
