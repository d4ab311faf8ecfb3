# The perturbed captions of every image of D for each neuron set (noise at levels in one reference scale, the same
# for every method; zero-ablation) and each set patched into its target's inpainted images (restoration), one job
# per target; the no-perturbation reference; Tables II and III, restoration and the paired comparisons.


rule noise_scale:
    input:
        noise_scale_dumps,
    output:
        "results/perturb/noise_scale.json",
    log:
        "results/logs/noise_scale.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        scale=config["noise"]["scale"],
        levels=config["noise"]["levels"],
    script:
        "../workflow/scripts/noise_scale.py"


rule reference_captions:
    input:
        **DATA,
        model=MODEL,
        selected="results/samples/selected.tsv",
    output:
        "results/perturb/reference.jsonl",
    log:
        "results/logs/reference_captions.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    resources:
        gpu=GPUS,
    params:
        model=config["model"],
        prompt=config["prompt"],
        protocol=PROTOCOL,
        synonyms=config["synonyms"],
        generation=config["generation"],
    script:
        "../workflow/scripts/reference_captions.py"


rule perturb:
    input:
        **DATA,
        model=MODEL,
        selected="results/samples/selected.tsv",
        sets=expand("results/neurons/{kind}/{{k}}", kind=SET_KINDS),
        scale="results/perturb/noise_scale.json",
    output:
        **RESTORED,
        perturbed=expand("results/perturb/{kind}/{{k}}.jsonl", kind=SET_KINDS),
    log:
        "results/logs/perturb/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    resources:
        gpu=GPUS,
    params:
        model=config["model"],
        prompt=config["prompt"],
        protocol=PROTOCOL,
        kinds=SET_KINDS,
        knowledge=lambda w: knowledge_name(w.k),
        synonyms=config["synonyms"],
        generation=config["generation"],
    script:
        "../workflow/scripts/perturb.py"


rule restoration:
    input:
        restorations=all_restorations,
        knowledge="results/samples/knowledge.tsv",
        samples="results/samples/selected.tsv",
    output:
        csv=report("results/tables/restoration.csv", category="Tables"),
        md=report("results/tables/restoration.md", category="Tables"),
        png=report(
            "results/figures/restoration.png",
            caption="../report/restoration.rst",
            category="Figures",
        ),
    log:
        "results/logs/restoration.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/restoration.py"


rule pairwise:
    input:
        perturbations=all_perturbations,
        restorations=all_restorations,
    output:
        csv=report("results/tables/pairwise.csv", category="Tables"),
        md=report("results/tables/pairwise.md", category="Tables"),
    log:
        "results/logs/pairwise.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/pairwise.py"


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
