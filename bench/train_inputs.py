"""The inputs of the embedded captioner's training steps: each batch processed anew by the processor, the naive
way, against `TrainingInputs` (each example processed on its first draw, then kept), same run, the same draws as
`train_captioner` makes (images with probability `inpaint_prob` of one object inpainted).

Usage: python bench/train_inputs.py [--threads 1] [--steps 200] [--records 6000]
Needs the synthetic training split (the default run's results/synth). Prints ms per step of each way (batch
inputs only, no model), the ratio, and the whole of `--steps` steps; the model's part of a step is
bench/train_precision.py's.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from train_precision import training_arguments  # this folder's: both benches read the same split

from kneurons.coco import image_records, load_coco, read_image
from kneurons.synth.captioner import (
    CaptionerSettings,
    TrainingInputs,
    build_processor,
    build_tokenizer,
    record_caption,
    training_batch,
    training_draws,
    training_example,
)


def main() -> None:
    ap = training_arguments(__doc__.splitlines()[0], steps=200)
    ap.add_argument("--records", type=int, default=6000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = CaptionerSettings()
    records = image_records(load_coco(args.annotations), args.images)[: args.records]
    images = [read_image(r.path) for r in records]
    tokenizer = build_tokenizer([args.prompt.replace("<image>", " ")] + [record_caption(r) for r in records])
    processor = build_processor(tokenizer, settings)
    prompt_len = len(processor(images=images[:1], text=[args.prompt])["input_ids"][0])
    rng = np.random.default_rng(settings.seed)
    draws = [training_draws(rng, records, settings) for _ in range(args.steps)]
    examples: dict = {}  # each example made once, before the timings: both ways time the processor alone

    def example(key: tuple[int, int | None]) -> tuple[np.ndarray, str]:
        if key not in examples:
            examples[key] = training_example(records[key[0]], images[key[0]], key[1], args.prompt, tokenizer.eos_token)
        return examples[key]

    for keys in draws:
        for key in keys:
            example(key)
    t0 = time.perf_counter()
    for keys in draws:
        training_batch(processor, *map(list, zip(*(example(k) for k in keys), strict=True)), prompt_len)
    naive = time.perf_counter() - t0
    inputs = TrainingInputs(processor, prompt_len, torch.bfloat16)
    t0 = time.perf_counter()
    for keys in draws:
        inputs.batch(keys, example)
    kept = time.perf_counter() - t0
    print(f"{args.steps} steps of {settings.batch_size} draws from {len(records)} records, torch threads "
          f"{args.threads}, {len(inputs.ids)} distinct examples")  # fmt: skip
    print(f"each batch processed anew: {naive / args.steps * 1e3:6.1f} ms/step ({naive:.1f} s)")
    print(f"TrainingInputs          : {kept / args.steps * 1e3:6.1f} ms/step ({kept:.1f} s), "
          f"ratio {naive / kept:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
