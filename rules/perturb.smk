# Noise-perturbed captioning of every image of D for each neuron set, and the paper's Table II.


rule perturb:
    input:
        **DATA,
        model=MODEL,
        selected="results/samples/selected.tsv",
        sets="results/neurons/{method}/{k}",
        activations="results/activations/{k}",
    output:
        "results/perturb/{method}/{k}.jsonl",
    log:
        "results/logs/perturb/{method}/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    resources:
        gpu=GPUS,
    params:
        model=config["model"],
        prompt=config["prompt"],
        noise=config["noise"],
        synonyms=config["synonyms"],
        generation=config["generation"],
    script:
        "../workflow/scripts/perturb.py"


rule table2:
    input:
        perturbations=all_perturbations,
        knowledge="results/samples/knowledge.tsv",
        samples="results/samples/selected.tsv",
    output:
        csv=report("results/tables/table2.csv", category="Tables"),
        md=report("results/tables/table2.md", category="Tables"),
    log:
        "results/logs/table2.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/table2.py"


rule table3:
    input:
        perturbations=all_perturbations,
        knowledge="results/samples/knowledge.tsv",
        samples="results/samples/selected.tsv",
    output:
        csv=report("results/tables/table3.csv", category="Tables"),
        md=report("results/tables/table3.md", category="Tables"),
    log:
        "results/logs/table3.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    params:
        bert_model=config["metrics"]["bertscore_model"],
        bert_layers=config["metrics"]["bertscore_layers"],
    script:
        "../workflow/scripts/table3.py"
