"""Rule train_captioner: train the embedded default's LLaVA captioner on the synthetic training split."""

from kneurons.coco import image_records, load_coco
from kneurons.jobs import console, start_job
from kneurons.synth.captioner import CaptionerSettings, train_captioner

log = start_job(snakemake)
records = image_records(load_coco(snakemake.input.annotations), snakemake.input.images)
summary = train_captioner(
    records,
    prompt=snakemake.params.prompt,
    out_dir=snakemake.output[0],
    settings=CaptionerSettings(**snakemake.params.settings),
    log=console,  # the progress line on the console, not only in the log
)
log.info("trained: %s", summary)
