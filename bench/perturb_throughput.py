"""Noisy-caption throughput: one generate call per caption (naive) against the batched path, same rows, same run.

Usage: python bench/perturb_throughput.py [--model results/model/captioner] [--rows 128] [--batch 64] [--threads 1]
Needs a trained model directory and a COCO-format split (the default run's results/ has both). Prints seconds
per caption for both paths and their ratio; it also checks that both paths give the same captions.
"""

from __future__ import annotations

import argparse
import time

import torch

from kneurons.coco import image_records, load_coco, read_image
from kneurons.models import load_model
from kneurons.perturb import layer_units, perturbed_captions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="results/model/captioner")
    ap.add_argument("--annotations", default="results/synth/annotations/instances_val.json")
    ap.add_argument("--images", default="results/synth/val")
    ap.add_argument("--prompt", default="<image>The image shows a")
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    images = [read_image(r.path) for r in image_records(load_coco(args.annotations), args.images)[:16]]
    # 3 units in every layer, absolute noise of a small level; row r: seed r on image r mod 16
    neurons = [[layer, 17 * j + layer] for layer in range(loaded.n_layers) for j in range(3)]
    units = layer_units(neurons, loaded.n_layers)
    rows = [(0.5, r, r % len(images)) for r in range(args.rows)]

    t0 = time.perf_counter()
    naive = perturbed_captions(loaded, images, args.prompt, units, rows, batch_size=1)
    t_naive = (time.perf_counter() - t0) / len(rows)
    t0 = time.perf_counter()
    batched = perturbed_captions(loaded, images, args.prompt, units, rows, batch_size=args.batch)
    t_batched = (time.perf_counter() - t0) / len(rows)

    print(f"model {args.model}, {len(rows)} rows, torch threads {args.threads}")
    print(f"per-caption generate : {t_naive * 1e3:8.2f} ms/caption")
    print(f"batched (batch {args.batch:3d}) : {t_batched * 1e3:8.2f} ms/caption")
    print(f"ratio                : {t_naive / t_batched:8.2f}x")
    print(f"same captions        : {naive == batched}")


if __name__ == "__main__":
    main()
