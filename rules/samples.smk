# Stage 1 and 2 of the pipeline: knowledge targets, inpainting k out, captions, and the sample set D.


checkpoint knowledge:
    input:
        DATA["annotations"],
    output:
        "results/samples/knowledge.tsv",
    log:
        "results/logs/knowledge.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        spec=config["knowledge"],
        per_supercategory=config["knowledge_per_supercategory"],
    script:
        "../workflow/scripts/knowledge.py"


rule check_images:
    input:
        **DATA,
        knowledge="results/samples/knowledge.tsv",
    output:
        "results/samples/image_check.tsv",
    log:
        "results/logs/check_images.log",
    priority: 10
    conda:
        "../envs/kneurons.yaml"
    params:
        max_candidates=config["samples"]["max_candidates"],
        bad_images=config["samples"]["bad_images"],
    script:
        "../workflow/scripts/check_images.py"


rule inpaint:
    input:
        **DATA,
        knowledge="results/samples/knowledge.tsv",
        checked="results/samples/image_check.tsv",
    output:
        candidates="results/samples/{k}/candidates.tsv",
        images=directory("results/inpainted/{k}"),
    log:
        "results/logs/inpaint/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        name=lambda w: knowledge_name(w.k),
        options=config["samples"],
    script:
        "../workflow/scripts/inpaint.py"


rule caption_candidates:
    input:
        **DATA,
        model=MODEL,
        candidates="results/samples/{k}/candidates.tsv",
        inpainted="results/inpainted/{k}",
    output:
        "results/samples/{k}/captioned.tsv",
    log:
        "results/logs/caption_candidates/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    threads: config["threads"]
    resources:
        gpu=GPUS,
    params:
        model=config["model"],
        prompt=config["prompt"],
        generation=config["generation"],
    script:
        "../workflow/scripts/caption_candidates.py"


checkpoint select_samples:
    input:
        "results/samples/{k}/captioned.tsv",
    output:
        "results/samples/{k}/selected.tsv",
    log:
        "results/logs/select_samples/{k}.log",
    conda:
        "../envs/kneurons.yaml"
    params:
        name=lambda w: knowledge_name(w.k),
        n=config["samples"]["per_knowledge"],
        synonyms=lambda w: synonyms(w.k),
    script:
        "../workflow/scripts/select_samples.py"


rule sample_table:
    input:
        all_selected_tables,
    output:
        report("results/samples/selected.tsv", category="Samples"),
    log:
        "results/logs/sample_table.log",
    conda:
        "../envs/kneurons.yaml"
    script:
        "../workflow/scripts/sample_table.py"
