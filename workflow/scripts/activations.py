"""Rule activations: dump O' (L, P, d_ff) of the original and inpainted image of each sample of k (full mode) or
its per-neuron statistics and strongest traces (compact mode)."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.stages import activations_stage

start_job(snakemake)
activations_stage(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    snakemake.params.prompt,
    snakemake.output[0],
    mode=snakemake.params.dumps["mode"],
    trace_share=snakemake.params.dumps["trace_share"],
)
