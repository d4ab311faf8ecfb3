# Knowledge editing in the weights: the images the edits are judged on (none of them in D), each method's
# knowledge-level sets of k and their random controls, the edited model's captions on them (one model load per
# target, every edit applied in place and undone), and the editing tables and figure.


rule edit_split:
    input:
        captioned=lambda w: expand(
            "results/samples/{k}/captioned.tsv", k=knowledge_slugs()
        ),
        selected="results/samples/selected.tsv",
    output:
        report("results/edits/heldout.tsv", category="Editing"),
    log:
        "results/logs/edit_split.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        editing=EDITING.of("split"),
        synonyms=config["synonyms"],
    script:
        "../workflow/scripts/edit_split.py"


rule edit_sets:
    input:
        sets=expand("results/neurons/{method}/{{k}}", method=EDIT_METHODS),
        gradcam="results/gradcam/{k}",
    output:
        expand("results/edits/sets/{kind}/{{k}}.json", kind=EDIT_KINDS),
    log:
        "results/logs/edit_sets/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        knowledge=lambda w: knowledge_name(w.k),
        editing=EDITING.of("sets"),
    script:
        "../workflow/scripts/edit_sets.py"


rule edit_eval:
    input:
        **DATA,
        model=MODEL,
        split="results/edits/heldout.tsv",
        sets=expand("results/edits/sets/{kind}/{{k}}.json", kind=EDIT_KINDS),
        # k' of the rewrite is read from the targets (params): a job on a cluster node needs the file as input
        knowledge="results/samples/knowledge.tsv",
    output:
        "results/edits/eval/{k}.jsonl",
    log:
        "results/logs/edit_eval/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    resources:
        gpu=GPUS,
    params:
        model=config["model"],
        prompt=config["prompt"],
        generation=config["generation"],
        synonyms=config["synonyms"],
        knowledge=lambda w: knowledge_name(w.k),
        rewrite_to=lambda w: rewrite_target(w.k),
        editing=EDITING.of("eval"),
    script:
        "../workflow/scripts/edit_eval.py"


rule editing:
    input:
        all_edit_evals,
    output:
        csv=report("results/tables/editing.csv", category="Editing"),
        md=report("results/tables/editing.md", category="Editing"),
        pairwise_csv=report("results/tables/editing_pairwise.csv", category="Editing"),
        pairwise_md=report("results/tables/editing_pairwise.md", category="Editing"),
        png=report(
            "results/figures/editing.png",
            caption="../report/editing.rst",
            category="Editing",
        ),
    log:
        "results/logs/editing.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    params:
        bert_model=config["metrics"]["bertscore_model"],
        bert_layers=config["metrics"]["bertscore_layers"],
    script:
        "../workflow/scripts/editing.py"
