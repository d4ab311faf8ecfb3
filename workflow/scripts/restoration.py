"""Rule restoration: S_rest and the log p gap closed per set kind, beside the ceiling and the floor."""

from kneurons.jobs import start_job
from kneurons.rules.perturb import restoration

start_job(snakemake)
restoration(
    list(snakemake.input.restorations),
    snakemake.input.knowledge,
    snakemake.input.samples,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.png,
)
