"""Rule edit_split: every target's discovery, held-out and locality images, with the reason each is there."""

from kneurons.jobs import start_job
from kneurons.protocol import Editing
from kneurons.rules.editing import edit_split

start_job(snakemake)
edit_split(
    list(snakemake.input.captioned),
    snakemake.input.selected,
    Editing.from_settings(snakemake.params.editing),
    snakemake.params.synonyms,
    snakemake.output[0],
)
