"""A training step of the embedded captioner: float32 with the default (SDPA) attention, the naive way, against
bfloat16 autocast with eager attention, the way `train_captioner` trains where the CPU has native bfloat16, same
run, same batch; bfloat16 autocast with SDPA attention beside them (CPU flash attention's backward is slow in
bfloat16).

Usage: python bench/train_precision.py [--threads 1] [--steps 8] [--batch 64]
Needs the synthetic training split (the default run's results/synth). Prints ms per step (forward, backward, AdamW)
of each way and the ratio against float32.
"""

from __future__ import annotations

import argparse
import time

import torch

from kneurons.coco import image_records, load_coco, read_image
from kneurons.synth.captioner import (
    CaptionerSettings,
    build_model,
    build_processor,
    build_tokenizer,
    record_caption,
    training_batch,
    training_loss,
)

WAYS = {
    "float32, SDPA": ("sdpa", "float32"),
    "bfloat16, SDPA": ("sdpa", "bfloat16"),
    "bfloat16, eager": ("eager", "bfloat16"),
}


def ms_per_step(model, batch: dict, labels: torch.Tensor, precision: str, steps: int) -> float:
    """Milliseconds per training step (forward, backward, AdamW) of ``model`` on one batch, after one warm-up."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        training_loss(model, batch, labels, precision).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps * 1e3


def training_arguments(description: str, steps: int) -> argparse.ArgumentParser:
    """The arguments of a training bench (this one, bench/train_inputs.py): the training split, the prompt, torch
    threads (1) and steps."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--annotations", default="results/synth/annotations/instances_train.json")
    ap.add_argument("--images", default="results/synth/train")
    ap.add_argument("--prompt", default="<image>The image shows a")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=steps)
    return ap


def main() -> None:
    ap = training_arguments(__doc__.splitlines()[0], steps=8)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    records = image_records(load_coco(args.annotations), args.images)[: args.batch]
    captions = [record_caption(r) for r in records]
    tokenizer = build_tokenizer([args.prompt.replace("<image>", " "), *captions])
    settings = CaptionerSettings(batch_size=args.batch)
    processor = build_processor(tokenizer, settings)
    texts = [f"{args.prompt} {c}{tokenizer.eos_token}" for c in captions]
    images = [read_image(r.path) for r in records]
    prompt_len = len(processor(images=images[:1], text=[args.prompt])["input_ids"][0])
    batch, labels = training_batch(processor, images, texts, prompt_len)
    ms = {}
    for way, (attention, precision) in WAYS.items():
        torch.manual_seed(0)
        model = build_model(tokenizer, settings).train()
        model.set_attn_implementation(attention)
        ms[way] = ms_per_step(model, batch, labels, precision, args.steps)
    print(f"batch {args.batch} x {batch['input_ids'].shape[1]} tokens, torch threads {args.threads}, "
          f"bfloat16 native: {torch.cpu.get_capabilities().get('avx512_bf16', False)}")  # fmt: skip
    for way, t in ms.items():
        print(f"{way:16s}: {t:8.1f} ms/step, ratio against float32 {ms['float32, SDPA'] / t:5.2f}x")


if __name__ == "__main__":
    main()
