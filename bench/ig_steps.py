"""What batching the integrated-gradients steps saves, same samples, same run: each sample of D's IG (every layer ×
m steps, kneurons.integrated) computed (1) the workflow's way, up to --rows scaled copies of the prompt per forward
and backward pass, and (2) the naive way, a loop of one pass per (layer, step), as Dai et al.'s code runs with a
batch of one; and what one sample's GradCAM (one pass) costs beside them.

Usage: python bench/ig_steps.py [--run .] [--samples 3] [--steps 20] [--rows 20] [--threads 1] [--repeats 3]
Needs a finished run of the embedded default (its model and D under --run). Prints ms per sample of each path, the
ratio (2) / (1), and the largest difference between the two paths' IG.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from kneurons.coco import read_record, records_by_id
from kneurons.dumps import gradcam, target_prefix
from kneurons.integrated import integrated_gradients
from kneurons.models import load_model
from kneurons.samples import sample_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=".", help="the directory of a finished run (results/ under it)")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each path (the fastest is kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run, config = Path(args.run), yaml.safe_load(Path(args.config).read_text())
    loaded = load_model(run / config["model"]["path"], dtype=config["model"].get("dtype", "auto"))
    prompt = config["prompt"]
    d = sample_images(str(run / "results/samples/selected.tsv"))[: args.samples]
    records = records_by_id(str(run / config["data"]["annotations"]), str(run / config["data"]["images"]))
    pixels = [read_record(records[r.image_id]) for r in d]
    ids = [r.emitted_ids("selected.tsv") for r in d]
    targets = [
        target_prefix(loaded, p, prompt, r.caption, r.knowledge, (), i) for p, r, i in zip(pixels, d, ids, strict=True)
    ]

    def timed(path):
        best, out = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = path()
            best = min(best, time.perf_counter() - t0)
        return 1000 * best / len(d), out

    batched_ms, batched = timed(lambda: [integrated_gradients(loaded, t, args.steps, args.rows) for t in targets])
    loop_ms, loop = timed(lambda: [integrated_gradients(loaded, t, args.steps, 1) for t in targets])
    cam_ms, _ = timed(
        lambda: [
            gradcam(loaded, p, prompt, r.caption, r.knowledge, (), i) for p, r, i in zip(pixels, d, ids, strict=True)
        ]
    )
    diff = max(float(np.abs(a - b).max()) for a, b in zip(batched, loop, strict=True))
    scale = max(float(np.abs(a).max()) for a in loop)
    print(f"model {config['model']['path']} ({loaded.model.dtype}), {len(d)} samples, {loaded.n_layers} layers x "
          f"{args.steps} steps, {args.threads} thread(s)")  # fmt: skip
    print(f"IG batched ({args.rows} rows per pass): {batched_ms:.0f} ms per sample")
    print(f"IG loop (one pass per step):      {loop_ms:.0f} ms per sample")
    print(f"ratio loop / batched: {loop_ms / batched_ms:.2f}x; GradCAM alone: {cam_ms:.0f} ms per sample")
    print(f"largest |batched - loop| {diff:.2e} (largest |IG| {scale:.2e})")


if __name__ == "__main__":
    main()
