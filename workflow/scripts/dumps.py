"""Rule dumps: with one model load, the activation dump of each sample of k (O' (L, P, d_ff) of its original and
inpainted image, or their statistics) and its GradCAM dump for k's first caption token (g or its statistics)."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.stages import activations_stage, gradcam_stage

start_job(snakemake)
loaded = load_job_model(snakemake)
data = (snakemake.input.annotations, snakemake.input.images, snakemake.input.selected, snakemake.params.prompt)
mode = snakemake.params.dumps["mode"]
activations_stage(
    loaded, *data, snakemake.output.activations, mode=mode, trace_share=snakemake.params.dumps["trace_share"]
)
gradcam_stage(loaded, *data, snakemake.params.synonyms, snakemake.output.gradcam, mode=mode)
