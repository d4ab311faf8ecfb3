"""Rule dose_response: S_re against S_se of every method and its random control, per perturbation."""

from kneurons.jobs import start_job
from kneurons.rules.figures import dose_response

start_job(snakemake)
dose_response(snakemake.input.table2, snakemake.input.pairwise, snakemake.output.png, snakemake.output.md)
