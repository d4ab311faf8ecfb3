# The embedded default: synthetic COCO-format scenes and the small LLaVA captioner trained on them.


rule synth_split:
    output:
        annotations="results/synth/annotations/instances_{split}.json",
        images=directory("results/synth/{split}"),
    log:
        "results/logs/synth_split/{split}.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        seed=lambda w: config["synth"]["seed"] + SPLIT_SEED_OFFSETS[w.split],
        n_images=lambda w: config["synth"][f"{w.split}_images"],
        synth=config["synth"],
    script:
        "../workflow/scripts/synth_split.py"


if config["captioner"]["train"]:

    # Only with captioner.train (config/train-captioner.yaml): otherwise model.path is the shipped captioner.
    rule train_captioner:
        input:
            **synth_split_files("train"),
        output:
            directory(TRAINED_MODEL),
        log:
            "results/logs/train_captioner.log",
        conda:
            "../envs/kneurons.yaml"
        threads: config["captioner"]["threads"]
        params:
            settings=lambda w: {
                k: v
                for k, v in config["captioner"].items()
                if k not in ("threads", "train")
            }
            | {"image_size": config["synth"]["image_size"]},
            prompt=config["prompt"],
            record={"captioner": config["captioner"], "synth": config["synth"]},
        script:
            "../workflow/scripts/train_captioner.py"


rule evaluate_captioner:
    input:
        **synth_split_files("val"),
        model=MODEL,
    output:
        report("results/model/eval.json", category="Captioner"),
    log:
        "results/logs/evaluate_captioner.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    resources:
        gpu=GPUS,
    params:
        prompt=config["prompt"],
        model=config["model"],
        quality=config["captioner_quality"],
    script:
        "../workflow/scripts/evaluate_captioner.py"
