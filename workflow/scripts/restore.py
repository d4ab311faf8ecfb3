"""Rule restore: one target's inpainted images captioned with each neuron set patched to the original's values."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.protocol import Protocol
from kneurons.stages import restore_stage

start_job(snakemake)
kinds = snakemake.params.kinds
restore_stage(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    dict(zip(kinds, snakemake.input.sets, strict=True)),
    snakemake.params.prompt,
    Protocol.from_settings(snakemake.params.protocol),
    synonyms=snakemake.params.synonyms,
    out_jsonls=dict(zip(kinds, snakemake.output.sets, strict=True)),
    bounds_jsonl=snakemake.output.bounds,
    **snakemake.params.generation,
)
