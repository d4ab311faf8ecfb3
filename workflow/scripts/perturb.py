"""Rule perturb: one target's neuron sets of every kind, perturbed on every image of D (necessity) and, when the
protocol restores, patched into the target's inpainted images (sufficiency): one model load, D read once."""

from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.protocol import Protocol
from kneurons.stages import load_samples, perturb_stage, restore_stage

start_job(snakemake)
loaded = load_job_model(snakemake)
protocol = Protocol.from_settings(snakemake.params.protocol)
prompt, synonyms, gen = snakemake.params.prompt, snakemake.params.synonyms, snakemake.params.generation
kinds = snakemake.params.kinds
set_dirs = dict(zip(kinds, snakemake.input.sets, strict=True))
d = load_samples(
    loaded,
    snakemake.input.annotations,
    snakemake.input.images,
    snakemake.input.selected,
    prompt,
    synonyms,
    protocol,
)
perturb_stage(
    loaded,
    d,
    set_dirs,
    snakemake.input.scale,
    prompt,
    protocol,
    synonyms,
    out_jsonls=dict(zip(kinds, snakemake.output.perturbed, strict=True)),
    **gen,
)
if protocol.restoration:
    restore_stage(
        loaded,
        d.of(snakemake.params.knowledge),
        set_dirs,
        prompt,
        synonyms,
        out_jsonls=dict(zip(kinds, snakemake.output.restored, strict=True)),
        bounds_jsonl=snakemake.output.bounds,
        **gen,
    )
