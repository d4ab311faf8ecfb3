"""Two model jobs on a 2-core box: one after the other on two torch threads each (the naive way) against side by
side on one thread each (the default's ``threads: 1``), same work, same run. Each job is a fresh interpreter, as
Snakemake starts it, so its start-up (imports, model load) is in the wall time.

Usage: python bench/job_threads.py [--work perturb|train] [--model models/embedded-captioner] [--repeats 1]
- ``perturb``: each job captions the same perturbed rows (every noise level and zero-ablation) in batches of 64.
- ``train``: each job runs training steps (forward, backward, AdamW, in the training's precision) of the captioner
  on a batch of 64 images, or, side by side, on its half of the batch: the most data-parallel training on two
  one-thread processes could gain (it leaves out the gradient all-reduce). Pass the training split with
  --annotations and --images.
Needs a trained model directory and the synthetic split (the default run's results/ has both). Prints the wall
seconds of both ways and their ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

WORKER = "--worker"


def job(args: argparse.Namespace, threads: int, rows: int) -> None:
    """One job (a worker process): ``rows`` perturbed captions, or training steps on a batch of ``rows`` images."""
    import torch

    torch.set_num_threads(threads)
    from kneurons.coco import image_records, load_coco, read_image
    from kneurons.generation import generate_scored_batch, image_inputs
    from kneurons.models import load_model
    from kneurons.perturb import layer_units, perturbed_batch
    from kneurons.protocol import ABLATION, NOISE, Perturbation
    from kneurons.synth.captioner import record_caption, training_batch, training_loss, training_precision

    loaded = load_model(args.model)
    records = image_records(load_coco(args.annotations), args.images)
    if args.work == "perturb":
        images = [read_image(r.path) for r in records[:16]]
        parts = image_inputs(loaded, images, args.prompt)
        neurons = [[layer, 17 * j + layer] for layer in range(loaded.n_layers) for j in range(3)]
        units = layer_units(neurons, loaded.n_layers)
        kinds = [Perturbation(NOISE, level, seed) for seed in range(2) for level in (2, 5, 10, 20, 50)]
        kinds.append(Perturbation(ABLATION))
        plan = [(kinds[r % len(kinds)], r % len(images)) for r in range(rows)]
        for start in range(0, rows, 64):
            perturbed_batch(loaded, parts, units, plan[start : start + 64], 0.12, 32, generate=generate_scored_batch)
        return
    processor, batch_records = loaded.processor, records[:rows]
    texts = [f"{args.prompt} {record_caption(r)}{processor.tokenizer.eos_token}" for r in batch_records]
    images = [read_image(r.path) for r in batch_records]
    prompt_len = len(processor(images=images[:1], text=[args.prompt])["input_ids"][0])
    batch, labels = training_batch(processor, images, texts, prompt_len)
    model = loaded.model.train().requires_grad_(True)
    model.set_attn_implementation("eager")  # as train_captioner trains
    precision = training_precision("auto")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(args.steps):
        training_loss(model, batch, labels, precision).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def wall(argv: list[str], jobs: list[tuple[int, int]]) -> float:
    """Seconds from starting the worker processes ``jobs`` ((threads, rows) each) side by side until all ended."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, *argv, WORKER, str(t), str(r)]) for t, r in jobs]
    if any(p.wait() for p in procs):
        sys.exit("bench/job_threads.py: a worker failed")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", choices=["perturb", "train"], default="perturb")
    ap.add_argument("--model", default="models/embedded-captioner")
    ap.add_argument("--annotations", default="results/synth/annotations/instances_val.json")
    ap.add_argument("--images", default="results/synth/val")
    ap.add_argument("--prompt", default="<image>The image shows a")
    ap.add_argument("--rows", type=int, default=640, help="captions per job (perturb)")
    ap.add_argument("--steps", type=int, default=30, help="training steps per job (train)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(WORKER, nargs=2, type=int, metavar=("THREADS", "ROWS"), help=argparse.SUPPRESS)
    args, argv = ap.parse_args(), sys.argv[1:]
    if args.worker:
        job(args, *args.worker)
        return
    if args.work == "perturb":  # two jobs, each the whole work, on two threads one after the other or one side by side
        naive_jobs, side_jobs = [(2, args.rows)], [(1, args.rows), (1, args.rows)]
        naive_runs = 2
    else:  # one batch of 64 on two threads against two halves of 32 side by side, one thread each
        naive_jobs, side_jobs, naive_runs = [(2, 64)], [(1, 32), (1, 32)], 1
    naive = min(sum(wall(argv, naive_jobs) for _ in range(naive_runs)) for _ in range(args.repeats))
    side = min(wall(argv, side_jobs) for _ in range(args.repeats))
    what = f"{args.rows} captions per job" if args.work == "perturb" else f"{args.steps} steps of batch 64"
    print(f"work {args.work} ({what}), model {args.model}, best of {args.repeats}")
    print(f"two threads, one job at a time : {naive:8.1f} s")
    print(f"one thread, two side by side   : {side:8.1f} s")
    print(f"ratio                          : {naive / side:8.2f}x")


if __name__ == "__main__":
    main()
