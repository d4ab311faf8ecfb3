"""Rule edit_eval: one target's split captioned by the unedited model and with every knowledge-level set edited in
the weights by every edit (one model load, each edit in place and undone)."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.names import EDIT_KINDS
from kneurons.protocol import Captioning, Editing
from kneurons.rules.editing import edit_eval

start_job(snakemake)
edit_eval(
    load_job_model(snakemake),
    snakemake.input,
    snakemake.params.knowledge,
    snakemake.params.rewrite_to,
    dict(zip(EDIT_KINDS, snakemake.input.sets, strict=True)),
    Editing.from_settings(snakemake.params.editing),
    Captioning.from_params(snakemake.params),
    snakemake.output[0],
)
