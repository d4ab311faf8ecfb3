"""Rule neurons_control: the random control of one method's sets (its per-layer counts, units drawn at random)."""

from kneurons.jobs import start_job
from kneurons.rules.neurons import neurons_control

start_job(snakemake)
neurons_control(snakemake.wildcards.method, snakemake.input.sets, snakemake.input, snakemake.output[0])
