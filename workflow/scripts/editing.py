"""Rule editing: the editing table, its paired comparisons between methods and its figure."""

from kneurons.jobs import start_job
from kneurons.rules.editing import editing

start_job(snakemake)
editing(list(snakemake.input), snakemake.params.bert_model, snakemake.params.bert_layers, snakemake.output)
