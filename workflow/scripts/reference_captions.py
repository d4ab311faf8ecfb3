"""Rule reference_captions: D's clean captions, the no-perturbation reference of Tables II and III."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.protocol import Captioning, Protocol
from kneurons.rules.perturb import reference_captions

start_job(snakemake)
reference_captions(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    Protocol.from_settings(snakemake.params.protocol),
    Captioning.from_params(snakemake.params),
    snakemake.output[0],
)
