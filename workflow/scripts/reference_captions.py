"""Rule reference_captions: D's clean captions, the no-perturbation reference of Tables II and III."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.protocol import Protocol
from kneurons.stages import reference_stage

start_job(snakemake)
reference_stage(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    snakemake.params.prompt,
    Protocol.from_settings(snakemake.params.protocol),
    synonyms=snakemake.params.synonyms,
    out_jsonl=snakemake.output[0],
    **snakemake.params.generation,
)
