"""Rule noise_scale: the run's reference noise scale r and the absolute noise s.d. of each level."""

from kneurons.calibration import noise_scale_stage
from kneurons.jobs import start_job

start_job(snakemake)
noise_scale_stage(snakemake.params.scale, snakemake.params.levels, list(snakemake.input), snakemake.output[0])
