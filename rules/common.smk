# Helpers shared by the rules: paths, knowledge targets (from checkpoints), parameters, final outputs.

import glob

from kneurons.preflight import (
    discard_dump_dirs,
    discard_interrupted,
    incomplete_dumps,
    interrupted_outputs,
    missing_paths,
    model_family_problem,
)
from kneurons.names import (
    BASELINES,
    BOUNDS_FILE,
    EDIT_KINDS,
    EDIT_METHODS,
    IG_DAI,
    SHADOWED,
    SET_KINDS,
)
from kneurons.editsets import rewrite_target as first_other_target
from kneurons.protocol import Editing, Protocol
from kneurons.reporting import example_level
from kneurons.samples import read_knowledge, read_tsv, unslug
from kneurons.synth.record import shipped_model_problem, trained_here
from kneurons.synth.scenes import SPLIT_SEED_OFFSETS


wildcard_constraints:
    split="|".join(SPLIT_SEED_OFFSETS),
    k="[A-Za-z0-9_+-]+",
    method="|".join(SHADOWED),
    kind="|".join(SET_KINDS),
    baseline="|".join(BASELINES),


def synth_split_files(split):
    """The annotation file and image directory of one synthetic split."""
    return {
        "annotations": f"results/synth/annotations/instances_{split}.json",
        "images": f"results/synth/{split}",
    }


DATA = {
    "annotations": config["data"]["annotations"],
    "images": config["data"]["images"],
}
MODEL = config["model"]["path"]
# The embedded captioner, trained by rule train_captioner (captioner.train) or shipped with its training record
# (models/embedded-captioner), is evaluated on the synthetic held-out split before any knowledge job when that split
# is the data (the embedded default); a model of the field, or other data, is not.
TRAIN = config["captioner"]["train"]
TRAINED_MODEL = "results/model/captioner"
EVALUATE = (TRAIN or trained_here(MODEL)) and os.path.normpath(
    DATA["annotations"]
) == synth_split_files("val")["annotations"]
# The perturbation settings of rules reference_captions and perturb, built once from the config.
PROTOCOL = Protocol.from_config(config).settings()
# The editing settings of rules edit_split, edit_sets and edit_eval, each rule's own.
EDITING = Editing.from_config(config)
# Rule perturb's restoration outputs, when the protocol restores: each set kind's and the bounds', per target.
RESTORE_FILES = expand(
    "results/perturb/restore/{kind}/{{k}}.jsonl", kind=(*SET_KINDS, BOUNDS_FILE)
)
RESTORED = (
    {"restored": RESTORE_FILES[:-1], BOUNDS_FILE: RESTORE_FILES[-1]}
    if PROTOCOL["restoration"]
    else {}
)
# The rules that load the model ask the scheduler for one GPU when the model runs on CUDA (SLURM: --gpus=1).
ON_CUDA = str(config["model"].get("device", "cpu")).startswith("cuda")
GPUS = config["model"].get("gpus", 1) if ON_CUDA else 0


def damaged_outputs(dry_run):
    """The outputs a run must discard before its jobs (they are recomputed): those of jobs a killed run started and
    never recorded as finished, and dumps left truncated. One line each; a ``dry_run`` only lists them.
    """
    dumps = glob.glob("results/activations/*/") + glob.glob("results/gradcam/*/")
    return discard_interrupted(interrupted_outputs(), dry_run) + discard_dump_dirs(
        incomplete_dumps(dumps), dry_run
    )


if workflow.is_main_process:
    # Before any job: every missing input path (one line each).
    problems = missing_paths(
        config,
        [p for s in SPLIT_SEED_OFFSETS for p in synth_split_files(s).values()]
        + ([MODEL] if TRAIN else []),
    )
    problems += filter(None, [model_family_problem(MODEL)])
    if TRAIN and os.path.normpath(MODEL) != TRAINED_MODEL:
        problems.append(
            f"config error at model.path: captioner.train trains into {TRAINED_MODEL}, not {MODEL}: set model.path"
            f" to {TRAINED_MODEL} (config/train-captioner.yaml does) or captioner.train to false"
        )
    if not TRAIN:
        problems += filter(None, [shipped_model_problem(MODEL, config)])
    if problems:
        sys.exit("\n".join(f"kneurons: {p}" for p in problems))
    if workflow.output_settings.dryrun:
        for line in damaged_outputs(dry_run=True):
            print(f"kneurons: {line}", file=sys.stderr)

# Reading the workflow (a dry run, --report, --lint, --summary, --list-changes, ...) changes no file: the damaged
# outputs are discarded only by a process about to run jobs, the first time the DAG asks for an input (the
# Snakefile is parsed before Snakemake knows what it will do; the executor is known by then).
DISCARDED = []


def discard_damaged():
    """Discard the damaged outputs (once), if this process is about to run jobs."""
    executing = workflow.executor_plugin is not None and not (
        workflow.dryrun or workflow.touch
    )
    if executing and workflow.is_main_process and not DISCARDED:
        DISCARDED.append(True)
        for line in damaged_outputs(dry_run=False):
            print(f"kneurons: {line}", file=sys.stderr)


def repaired(path):
    """``path`` (an input), once the damaged outputs are discarded (``discard_damaged``)."""
    discard_damaged()
    return path


def knowledge_name(k):
    """The category name of a knowledge slug, exactly ("fire_hydrant" -> "fire hydrant", "teddy+5Fbear" ->
    "teddy_bear")."""
    return unslug(k)


def synonyms(k):
    return config["synonyms"].get(knowledge_name(k), [])


def thresholds(k):
    """The stage thresholds of knowledge k: the default, overridden by k's own entry."""
    t = config["thresholds"]
    return t["default"] | t["knowledge"].get(knowledge_name(k), {})


def knowledge_slugs():
    """Slugs of every knowledge target (after checkpoint `knowledge` has run)."""
    discard_damaged()
    return [t.slug for t in read_knowledge(checkpoints.knowledge.get().output[0])]


def targets_with_samples():
    """Slugs of the targets for which at least one sample passed the constraints (after the checkpoints)."""
    slugs = []
    for k in knowledge_slugs():
        rows = read_tsv(checkpoints.select_samples.get(k=k).output[0])
        if any(r.status == "selected" for r in rows):
            slugs.append(k)
    return slugs


def all_selected_tables(wildcards):
    return expand("results/samples/{k}/selected.tsv", k=knowledge_slugs())


def all_neuron_sets(wildcards):
    """Every neuron set directory: each method's and each method's random control's, and Dai et al.'s own
    selection, per target with samples."""
    return expand(
        "results/neurons/{kind}/{k}",
        kind=(*SET_KINDS, IG_DAI),
        k=targets_with_samples(),
    )


def all_perturbations(wildcards):
    """Every perturbation file: the no-perturbation reference (when some target has samples) and one per set kind
    and target."""
    targets = targets_with_samples()
    reference = ["results/perturb/reference.jsonl"] if targets else []
    return reference + expand(
        "results/perturb/{kind}/{k}.jsonl", kind=SET_KINDS, k=targets
    )


def all_restorations(wildcards):
    """Every restoration file (when the protocol restores): each set kind's and the bounds', per target with
    samples."""
    return expand(RESTORE_FILES, k=targets_with_samples()) if RESTORED else []


def noise_scale_dumps(wildcards):
    """The activation dumps the reference noise scale is computed on (calibrated noise only)."""
    if config["noise"]["scale"] != "calibrated":
        return []
    return expand("results/activations/{k}", k=targets_with_samples())


def all_dumps(wildcards):
    """The activation and GradCAM dumps of every target with samples: kept results, so one found truncated (and
    discarded before any job) is recomputed, and what depends on it reruns."""
    return expand(
        "results/{kind}/{k}", kind=("activations", "gradcam"), k=targets_with_samples()
    )


def rewrite_target(k):
    """k' of target k's rewrite: editing.rewrite_to's entry, else the first target of another supercategory."""
    targets = read_knowledge(checkpoints.knowledge.get().output[0])
    return first_other_target(
        knowledge_name(k), targets, config["editing"]["rewrite_to"]
    )


def all_edit_evals(wildcards):
    """The edited captions of every target with samples."""
    return expand("results/edits/eval/{k}.jsonl", k=targets_with_samples())


def all_heatmaps(wildcards):
    return expand("results/figures/heatmaps/{k}.png", k=targets_with_samples())


def final_outputs():
    """Every file `rule all` asks for under the current config."""
    outputs = [
        "results/samples/selected.tsv",
        "results/neurons/summary.tsv",
        "results/tables/table2.csv",
        "results/tables/table3.csv",
        "results/tables/pairwise.csv",
        "results/tables/examples.md",
        "results/tables/decoded_neurons.md",
        "results/figures/layer_distribution.png",
        "results/figures/dose_response.png",
        "results/tables/editing.md",
    ]
    if PROTOCOL["restoration"]:
        outputs.append("results/tables/restoration.csv")
    if EVALUATE:
        outputs.append("results/model/eval.json")
    return outputs
