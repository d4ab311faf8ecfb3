"""Rule reference_captions: D's clean captions, the no-perturbation reference of Tables II and III."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.protocol import Protocol
from kneurons.stages import load_samples, reference_stage

start_job(snakemake)
loaded = load_job_model(snakemake)
prompt, synonyms = snakemake.params.prompt, snakemake.params.synonyms
d = load_samples(
    loaded,
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    prompt,
    synonyms,
    Protocol.from_settings(snakemake.params.protocol),
)
reference_stage(loaded, d, prompt, synonyms, snakemake.output[0], **snakemake.params.generation)
