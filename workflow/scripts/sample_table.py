"""Rule sample_table: all targets' candidates with their status and reason in one TSV."""

from kneurons.jobs import start_job
from kneurons.rules.samples import sample_table

start_job(snakemake)
sample_table(list(snakemake.input), snakemake.output[0])
