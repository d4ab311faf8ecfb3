"""Rule examples (Table I): original, inpainted and each method's noisy caption of each target's first sample."""

from kneurons.jobs import start_job
from kneurons.rules.figures import examples

start_job(snakemake)
examples(
    list(snakemake.input.perturbations),
    snakemake.input.selected,
    snakemake.params.methods,
    snakemake.params.level,
    snakemake.output.csv,
    snakemake.output.md,
)
