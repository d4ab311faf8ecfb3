"""Perturbed-caption throughput, same rows, same run: one transformers ``generate`` call per caption (naive), the
previous batched path (``generate`` on batches: every row decodes until the longest caption of its batch ends) and
the current batched path (kneurons' greedy loop: a row leaves the batch when its caption ends).

Usage: python bench/perturb_throughput.py [--model models/embedded-captioner] [--rows 256] [--batch 64] [--threads 1]
       [--levels 2 5 10 20 50] [--scale 0.12] [--naive-rows 64]
Needs a trained model directory and a COCO-format split (the default run's results/ has both). Rows mix every noise
level (in units of the reference scale --scale) and zero-ablation on a set of 3 units per layer. Prints ms per
caption of each path, the ratios, and whether the paths gave the same captions.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from kneurons.coco import image_records, load_coco, read_image
from kneurons.generation import BatchContext, generate_scored_batch, image_inputs
from kneurons.models import LoadedModel, load_model
from kneurons.perturb import layer_units, perturbed_batch
from kneurons.protocol import ABLATION, NOISE, Perturbation


@torch.inference_mode()
def generate_all_rows(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], max_new_tokens: int, context: BatchContext, continuations=None
) -> tuple[list[str], list[None]]:
    """The previous path: transformers' generate on the whole batch until every row has ended (no scores)."""
    with context(inputs["input_ids"]):
        out = loaded.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
    new = out[:, inputs["input_ids"].shape[1] :]
    return [c.strip() for c in loaded.processor.batch_decode(new, skip_special_tokens=True)], [None] * len(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/embedded-captioner")
    ap.add_argument("--annotations", default="results/synth/annotations/instances_val.json")
    ap.add_argument("--images", default="results/synth/val")
    ap.add_argument("--prompt", default="<image>The image shows a")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--levels", type=float, nargs="+", default=[2, 5, 10, 20, 50])
    ap.add_argument("--scale", type=float, default=0.12, help="reference scale r (noise_scale.json)")
    ap.add_argument("--naive-rows", type=int, default=64, help="rows timed one by one (the slowest path)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    images = [read_image(r.path) for r in image_records(load_coco(args.annotations), args.images)[:16]]
    parts = image_inputs(loaded, images, args.prompt)
    neurons = [[layer, 17 * j + layer] for layer in range(loaded.n_layers) for j in range(3)]
    units = layer_units(neurons, loaded.n_layers)
    kinds = [Perturbation(NOISE, level, seed) for seed in range(10) for level in args.levels] + [Perturbation(ABLATION)]
    rows = [(kinds[r % len(kinds)], r % len(images)) for r in range(args.rows)]

    def run(n_rows: int, batch: int, generate: Callable[..., list[str]]) -> tuple[float, list[str]]:
        """Seconds per caption and the captions of the first ``n_rows`` rows, ``batch`` rows per batch."""
        t0 = time.perf_counter()
        captions = []
        for start in range(0, n_rows, batch):
            chunk = rows[start : min(n_rows, start + batch)]
            captions += [c for c, _ in perturbed_batch(loaded, parts, units, chunk, args.scale, 32, generate=generate)]
        return (time.perf_counter() - t0) / n_rows, captions

    t_naive, naive = run(args.naive_rows, 1, generate_all_rows)
    t_prev, prev = run(len(rows), args.batch, generate_all_rows)
    t_now, now = run(len(rows), args.batch, generate_scored_batch)
    print(f"model {args.model}, {len(rows)} rows (noise levels {args.levels} x r = {args.scale}, and zero-ablation), "
          f"torch threads {args.threads}")  # fmt: skip
    print(f"per-caption generate ({args.naive_rows} rows)   : {t_naive * 1e3:8.2f} ms/caption")
    print(f"previous batched path (batch {args.batch:3d}) : {t_prev * 1e3:8.2f} ms/caption")
    print(f"current batched path  (batch {args.batch:3d}) : {t_now * 1e3:8.2f} ms/caption")
    print(f"ratio current vs per-caption     : {t_naive / t_now:8.2f}x")
    print(f"ratio current vs previous batched: {t_prev / t_now:8.2f}x")
    print(f"same captions: previous == current {prev == now}; per-caption == current {naive == now[: len(naive)]}")


if __name__ == "__main__":
    main()
