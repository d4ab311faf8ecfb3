"""Rule perturb: one target's neuron sets of every kind, perturbed on every image of D (necessity) and, when the
protocol restores, patched into the target's inpainted images (sufficiency): one model load, D read once."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.names import BOUNDS_FILE
from kneurons.protocol import Captioning, Protocol
from kneurons.rules.perturb import perturb

start_job(snakemake)
kinds, output = snakemake.params.kinds, snakemake.output
restored = dict(zip(kinds, output.restored, strict=True)) | {BOUNDS_FILE: output.bounds} if output.get("bounds") else {}
perturb(
    load_job_model(snakemake),
    snakemake.input,
    snakemake.params.knowledge,
    dict(zip(kinds, snakemake.input.sets, strict=True)),
    Protocol.from_settings(snakemake.params.protocol),
    Captioning.from_params(snakemake.params),
    {"perturbed": dict(zip(kinds, output.perturbed, strict=True)), "restored": restored},
)
