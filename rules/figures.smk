# The report's figures and example tables: layer distribution (Fig. 2), activation heatmaps (Fig. 3), decoded
# neurons (Fig. 3/5) and example captions (Table I).


rule layer_distribution:
    input:
        "results/neurons/summary.tsv",
    output:
        png=report(
            "results/figures/layer_distribution.png",
            caption="../report/layer_distribution.rst",
            category="Figures",
        ),
        csv=report("results/tables/layer_distribution.csv", category="Neurons"),
        md=report("results/tables/layer_distribution.md", category="Neurons"),
    log:
        "results/logs/layer_distribution.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/layer_distribution.py"


rule dose_response:
    input:
        table2="results/tables/table2.csv",
        pairwise="results/tables/pairwise.csv",
    output:
        png=report(
            "results/figures/dose_response.png",
            caption="../report/dose_response.rst",
            category="Figures",
        ),
        md=report("results/tables/dose_response.md", category="Tables"),
    log:
        "results/logs/dose_response.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/dose_response.py"


rule heatmaps:
    input:
        **DATA,
        selected="results/samples/{k}/selected.tsv",
        activations="results/activations/{k}",
        sets="results/neurons/ours/{k}",
    output:
        report(
            "results/figures/heatmaps/{k}.png",
            caption="../report/heatmaps.rst",
            category="Figures",
            subcategory="Activation heatmaps",
            labels={"knowledge": "{k}"},
        ),
    log:
        "results/logs/heatmaps/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        name=lambda w: knowledge_name(w.k),
        top=config["report"]["top_neurons"],
    script:
        "../workflow/scripts/heatmaps.py"


rule decoded_neurons:
    input:
        sets=all_neuron_sets,
        selected="results/samples/selected.tsv",
        model=MODEL,
    output:
        csv="results/tables/decoded_neurons.csv",
        md=report("results/tables/decoded_neurons.md", category="Neurons"),
    log:
        "results/logs/decoded_neurons.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    resources:
        gpu=GPUS,
    params:
        model=config["model"],
        top=config["report"]["top_neurons"],
    script:
        "../workflow/scripts/decoded_neurons.py"


rule examples:
    input:
        perturbations=all_perturbations,
        selected="results/samples/selected.tsv",
    output:
        csv="results/tables/examples.csv",
        md=report("results/tables/examples.md", category="Tables"),
    log:
        "results/logs/examples.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        methods=SET_KINDS,
        level=example_level(
            config["noise"]["levels"], config["report"]["example_level"]
        ),
    script:
        "../workflow/scripts/examples.py"
