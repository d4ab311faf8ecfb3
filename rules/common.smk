# Helpers shared by the rules: paths of the embedded default and the list of final outputs.

TRAINED_MODEL = "results/model/captioner"
SYNTH_SPLITS = {"train": 1, "val": 2}


wildcard_constraints:
    split="|".join(SYNTH_SPLITS),


def synth_split_files(split):
    """The annotation file and image directory of one synthetic split."""
    return {
        "annotations": f"results/synth/annotations/instances_{split}.json",
        "images": f"results/synth/{split}",
    }


def final_outputs():
    """Every file `rule all` asks for under the current config."""
    outputs = []
    if config["model"]["path"] == TRAINED_MODEL:
        outputs.append("results/model/eval.json")
    return outputs
