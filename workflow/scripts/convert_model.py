"""Rule convert_model: a model directory from a family's released files (config model.convert)."""

from kneurons.jobs import start_job
from kneurons.rules.model import convert_model

log = start_job(snakemake)
log.info("converted %s into %s", snakemake.params.convert, convert_model(snakemake.params.convert, snakemake.output[0]))
