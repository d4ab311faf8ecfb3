"""Rule evaluate_captioner: held-out mention precision/recall, removal constraints and FFN ablation -> eval.json."""

import json

from kneurons.coco import image_records, load_coco
from kneurons.io import write_json
from kneurons.jobs import start_job
from kneurons.models import load_job_model
from kneurons.synth.evaluate import evaluate_captioner, quality_checks, require_quality

log = start_job(snakemake)
coco = load_coco(snakemake.input.annotations)
names = [c["name"] for c in coco.loadCats(coco.getCatIds())]
loaded = load_job_model(snakemake)
result = evaluate_captioner(loaded, image_records(coco, snakemake.input.images), snakemake.params.prompt, names)
result["training"] = json.loads((loaded.path / "training.json").read_text())
result["quality"] = quality_checks(result, snakemake.params.quality)
log.info("eval: %s", result)
require_quality(result["quality"], snakemake.log[0])
write_json(snakemake.output[0], result)
