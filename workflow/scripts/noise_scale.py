"""Rule noise_scale: the run's reference noise scale r and the absolute noise s.d. of each level."""

from kneurons.jobs import start_job
from kneurons.rules.perturb import noise_scale

start_job(snakemake)
noise_scale(snakemake.params.scale, snakemake.params.levels, list(snakemake.input), snakemake.output[0])
