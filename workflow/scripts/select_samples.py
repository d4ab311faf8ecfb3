"""Checkpoint select_samples: the paper's three constraints; the first n passing candidates form D for k."""

from kneurons.jobs import console, start_job
from kneurons.rules.samples import select_samples
from kneurons.samples import selection_summary

start_job(snakemake)
counts = select_samples(snakemake.input[0], snakemake.params.n, snakemake.params.synonyms, snakemake.output[0])
console(selection_summary(snakemake.params.name, counts))
