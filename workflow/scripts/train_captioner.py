"""Rule train_captioner: train the embedded default's LLaVA captioner on the synthetic training split."""

import json
from pathlib import Path

from kneurons.coco import image_records, load_coco
from kneurons.jobs import console, start_job
from kneurons.synth.captioner import CaptionerSettings, train_captioner
from kneurons.synth.record import training_record

log = start_job(snakemake)
split = json.loads(Path(snakemake.input.annotations).read_text())
records = image_records(load_coco(snakemake.input.annotations), snakemake.input.images)
summary = train_captioner(
    records,
    prompt=snakemake.params.prompt,
    out_dir=snakemake.output[0],
    settings=CaptionerSettings(**snakemake.params.settings),
    log=console,  # the progress line on the console, not only in the log
    provenance=training_record(**snakemake.params.record, train_annotations=split),
)
log.info("trained: %s", summary)
