"""Rule table3: BLEU, ROUGE-1, ROUGE-L, BERTScore of noisy captions against the inpainted image's caption."""

from kneurons.jobs import start_job
from kneurons.rules.perturb import table3

start_job(snakemake)
table3(
    list(snakemake.input.perturbations),
    snakemake.input.knowledge,
    snakemake.input.samples,
    snakemake.params.bert_model,
    snakemake.params.bert_layers,
    snakemake.output.csv,
    snakemake.output.md,
)
