"""What the log-probability scores cost the perturb stage, same rows, same run: one perturb job's work for one
neuron set (every perturbation of the protocol x every sample of D) captioned (1) as before, without scores;
(2) with each sample's clean caption riding in the prompt pass and the KV cache cropped back to the prompt before
greedy decoding (the workflow's path); (3) the naive way, the captions of (1) plus a second, teacher-forced
forward per row for the score.

Usage: python bench/perturb_logprob.py [--run .] [--kind ours] [--threads 1] [--repeats 3]
Needs a finished run of the embedded default (its model, D and neuron sets under --run). Prints ms per caption of
each path, the ratios to (1), and whether (2) gave the captions of (1) and the scores of (3).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from kneurons.coco import read_record, records_by_id
from kneurons.dumps import target_position
from kneurons.logprob import continuations
from kneurons.models import load_model
from kneurons.perturb import layer_units, noise_vector, perturb_units, perturbed_captions
from kneurons.protocol import Protocol
from kneurons.samples import sample_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=".", help="the directory of a finished run (results/ under it)")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--kind", default="ours")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each path (the fastest is kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run, config = Path(args.run), yaml.safe_load(Path(args.config).read_text())
    loaded = load_model(run / config["model"]["path"])
    prompt, gen = config["prompt"], config["generation"]
    d = sample_images(str(run / "results/samples/selected.tsv"))
    records = records_by_id(str(run / config["data"]["annotations"]), str(run / config["data"]["images"]))
    pixels = [read_record(records[r.image_id]) for r in d]
    conts = continuations(loaded, pixels, prompt, [r.caption for r in d], [r.knowledge for r in d], config["synonyms"])
    set_file = sorted((run / "results/neurons" / args.kind).glob("*/*.json"))[0]
    nset = json.loads(set_file.read_text())
    units = layer_units(nset["neurons"], loaded.n_layers)
    scale = json.loads((run / "results/perturb/noise_scale.json").read_text())["reference_scale"]
    rows = [(c, j) for c in Protocol.from_config(config).perturbations() for j in range(len(d))]

    def unscored():
        return perturbed_captions(loaded, pixels, prompt, units, rows, scale, **gen)

    def scored():
        return perturbed_captions(loaded, pixels, prompt, units, rows, scale, continuations=conts, **gen)

    def naive():
        captions = unscored()
        logps = []
        with torch.inference_mode():
            for pert, j in rows:  # a second pass per row: prompt + clean caption, teacher-forced, same edit
                inputs, at = target_position(loaded, pixels[j], prompt, d[j].caption, d[j].knowledge)
                p = int(loaded.image_positions(inputs["input_ids"]).sum())
                level = pert.level * scale if pert.kind == "noise" else 0.0
                noise = torch.from_numpy(noise_vector(level, pert.seed, p))
                keep = torch.tensor([float(pert.kind == "noise")])
                with perturb_units(loaded, inputs["input_ids"], units, keep, noise):
                    logits = loaded.model(**inputs, position_ids=loaded.positions(inputs)).logits[0, at - 1]
                logps.append(float(torch.log_softmax(logits.float(), -1)[inputs["input_ids"][0, at]]))
        return [(c, lp) for (c, _), lp in zip(captions, logps, strict=True)]

    def timed(path):
        best, out = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = path()
            best = min(best, time.perf_counter() - t0)
        return best / len(rows), out

    t_before, before = timed(unscored)
    t_scored, now = timed(scored)
    t_naive, two = timed(naive)
    print(f"model {loaded.path}, set {set_file.relative_to(run)} ({nset['size']} units), {len(rows)} rows "
          f"({len(d)} samples x {len(rows) // len(d)} perturbations), torch threads {args.threads}, "
          f"best of {args.repeats}")  # fmt: skip
    print(f"(1) captions only (before)           : {t_before * 1e3:8.3f} ms/caption")
    print(f"(2) scores in the prompt pass (now)  : {t_scored * 1e3:8.3f} ms/caption")
    print(f"(3) captions + a second scoring pass : {t_naive * 1e3:8.3f} ms/caption")
    print(f"ratio (2) / (1): {t_scored / t_before:6.3f}   ratio (3) / (1): {t_naive / t_before:6.3f}")
    same_captions = [c for c, _ in now] == [c for c, _ in before]
    diff = max(abs(a - b) for (_, a), (_, b) in zip(now, two, strict=True))
    print(f"(2) captions == (1) captions: {same_captions}; max |log p (2) - log p (3)| = {diff:.2e}")


if __name__ == "__main__":
    main()
