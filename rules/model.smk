# A model directory made from a family's released files (config model.convert), e.g. MiniGPT-4's three parts.


if config["model"].get("convert"):

    rule convert_model:
        input:
            **{
                k: v
                for k, v in config["model"]["convert"].items()
                if k != "family" and v
            },
        output:
            directory(MODEL),
        log:
            "results/logs/convert_model.log",
        conda:
            "../envs/kneurons.yaml"
        params:
            convert=config["model"]["convert"],
        script:
            "../workflow/scripts/convert_model.py"
