"""Checkpoint knowledge: resolve the knowledge targets against the COCO categories."""

from kneurons.jobs import console, start_job
from kneurons.rules.samples import knowledge

start_job(snakemake)
targets = knowledge(snakemake.input[0], snakemake.params.spec, snakemake.params.per_supercategory, snakemake.output[0])
console(f"{len(targets)} knowledge target(s): " + ", ".join(t.name for t in targets))
