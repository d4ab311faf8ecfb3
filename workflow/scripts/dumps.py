"""Rule dumps: with one model load, the activation dump of each sample of k (O' (L, P, d_ff) of its original and
inpainted image, or their statistics) and its GradCAM dump for k's first caption token (g or its statistics)."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.protocol import Captioning
from kneurons.rules.neurons import dumps
from kneurons.samples import unslug

start_job(snakemake)
dumps(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    Captioning.from_params(snakemake.params, knowledge=unslug(snakemake.wildcards.k)),
    snakemake.params.dumps,
    snakemake.output,
)
