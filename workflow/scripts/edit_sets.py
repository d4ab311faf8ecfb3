"""Rule edit_sets: each method's knowledge-level set of one target and its random controls."""

from kneurons.jobs import start_job
from kneurons.names import EDIT_KINDS, EDIT_METHODS
from kneurons.protocol import Editing
from kneurons.rules.editing import edit_sets

start_job(snakemake)
edit_sets(
    snakemake.params.knowledge,
    dict(zip(EDIT_METHODS, snakemake.input.sets, strict=True)),
    snakemake.input.gradcam,
    Editing.from_settings(snakemake.params.editing),
    dict(zip(EDIT_KINDS, snakemake.output, strict=True)),
)
