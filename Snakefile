from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/synth.smk"
include: "rules/samples.smk"
include: "rules/neurons.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
