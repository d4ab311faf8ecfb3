import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


# The library in src/ serves this process (rules/common.smk imports it) and every job, with or without an
# installed package (e.g. under --use-conda, whose environment holds only the dependencies).
SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)
# (Set here, not required from the user, hence no `envvars:` directive.)
# Every job hashes strings the same way in every run: bert-score batches its deduplicated sentences in set order,
# and another batching changes BERTScore in the ninth decimal (Table III would differ between two runs).
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
    PYTHONHASHSEED="0",
)

from kneurons.preflight import schema_error_line

try:
    validate(config, "config/schema.yaml")
except WorkflowError as e:
    if schema_error_line(e) is None:
        raise
    sys.exit(f"kneurons: {schema_error_line(e)}")


include: "rules/common.smk"
include: "rules/synth.smk"
include: "rules/model.smk"
include: "rules/samples.smk"
include: "rules/neurons.smk"
include: "rules/perturb.smk"
include: "rules/figures.smk"
include: "rules/editing.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
        all_heatmaps,
        all_dumps,
