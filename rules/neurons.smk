# Activation and GradCAM dumps, the two-stage neuron sets N_k, and the baselines' sets of the same size.


# One job per target makes both dumps: the model's start-up (imports and load, about 5 s of a 6 s job on the
# embedded default) is paid once for them, not twice.
rule dumps:
    input:
        **DATA,
        model=MODEL,
        # a function: a truncated dump is discarded before this job is planned (rules/common.smk)
        selected=lambda w: repaired(f"results/samples/{w.k}/selected.tsv"),
        inpainted="results/inpainted/{k}",
    output:
        activations=directory("results/activations/{k}"),
        gradcam=directory("results/gradcam/{k}"),
    log:
        "results/logs/dumps/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    resources:
        gpu=GPUS,
    params:
        model=config["model"],
        prompt=config["prompt"],
        synonyms=lambda w: synonyms(w.k),
        dumps=config["dumps"],
    script:
        "../workflow/scripts/dumps.py"


rule neurons_ours:
    input:
        activations="results/activations/{k}",
        gradcam="results/gradcam/{k}",
    output:
        directory("results/neurons/ours/{k}"),
    log:
        "results/logs/neurons/ours/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        thresholds=lambda w: thresholds(w.k),
        exclude_last_layer=config["neurons"]["exclude_last_layer"],
    script:
        "../workflow/scripts/neurons_ours.py"


rule neurons_baseline:
    input:
        ours="results/neurons/ours/{k}",
        activations="results/activations/{k}",
        gradcam="results/gradcam/{k}",
    output:
        directory("results/neurons/{baseline}/{k}"),
    log:
        "results/logs/neurons/{baseline}/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        exclude_last_layer=config["neurons"]["exclude_last_layer"],
    script:
        "../workflow/scripts/neurons_baseline.py"


rule neurons_ig_dai:
    input:
        ours="results/neurons/ours/{k}",
        gradcam="results/gradcam/{k}",
    output:
        directory("results/neurons/ig_dai/{k}"),
    log:
        "results/logs/neurons/ig_dai/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        share=config["neurons"]["ig_share"],
        exclude_last_layer=config["neurons"]["exclude_last_layer"],
    script:
        "../workflow/scripts/neurons_ig_dai.py"


rule neurons_stage1:
    input:
        ours="results/neurons/ours/{k}",
        activations="results/activations/{k}",
    output:
        directory("results/neurons/ours_stage1/{k}"),
    log:
        "results/logs/neurons/ours_stage1/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/neurons_stage1.py"


rule neurons_control:
    input:
        sets="results/neurons/{method}/{k}",
        gradcam="results/gradcam/{k}",
    output:
        directory("results/neurons/{method}_control/{k}"),
    log:
        "results/logs/neurons/{method}_control/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/neurons_control.py"


rule neuron_summary:
    input:
        all_neuron_sets,
    output:
        report("results/neurons/summary.tsv", category="Neurons"),
    log:
        "results/logs/neuron_summary.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/neuron_summary.py"
