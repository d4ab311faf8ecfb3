"""Rule restoration: S_rest and the log p gap closed per set kind, beside the ceiling and the floor."""

from kneurons.comparisons import restoration_stage
from kneurons.jobs import start_job

start_job(snakemake)
restoration_stage(
    list(snakemake.input.restorations),
    snakemake.input.knowledge,
    snakemake.input.samples,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.png,
)
