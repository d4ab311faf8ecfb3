"""Rule perturb: caption every image of D with each neuron set of one (set kind, k) perturbed."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.protocol import Protocol
from kneurons.stages import perturb_stage

start_job(snakemake)
perturb_stage(
    load_job_model(snakemake),
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    snakemake.input.sets,
    snakemake.input.scale,
    snakemake.params.prompt,
    Protocol.from_settings(snakemake.params.protocol),
    synonyms=snakemake.params.synonyms,
    out_jsonl=snakemake.output[0],
    **snakemake.params.generation,
)
