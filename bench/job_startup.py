"""Job start-up: the imports of a job that needs no model (a rule module of kneurons.rules, whose model code is
imported inside the model rules' functions) against the same with that model code imported with the module (torch,
transformers, bert-score), as every job would pay it; and the imports of a Snakefile parse (rules/common.smk's)
against the same with kneurons.perturb (torch, transformers), which kneurons.protocol imported until session 16;
same run.

Usage: python bench/job_startup.py [--repeats 5]
Each measurement is a fresh interpreter (as Snakemake starts every script job); prints the median seconds of both
and their ratio. Needs no data or model.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

LIGHT = "import kneurons.jobs, kneurons.rules.neurons, kneurons.rules.perturb, kneurons.rules.figures"
# the naive way: the rule modules import their model and text-metric code at the top (as kneurons.stages did)
NAIVE = LIGHT + ", kneurons.dumps, kneurons.perturb, kneurons.restore, kneurons.vocab, bert_score, rouge_score"
# what rules/common.smk imports while every Snakemake instance parses the Snakefile (a SLURM job parses it twice)
PARSE = (
    "import kneurons.preflight, kneurons.names, kneurons.protocol, kneurons.reporting, kneurons.samples, "
    "kneurons.synth.record, kneurons.synth.scenes"
)
PARSE_NAIVE = PARSE + ", kneurons.perturb"


def seconds(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    seconds(NAIVE)  # warm the file cache for both
    light = statistics.median(seconds(LIGHT) for _ in range(args.repeats))
    naive = statistics.median(seconds(NAIVE) for _ in range(args.repeats))
    parse = statistics.median(seconds(PARSE) for _ in range(args.repeats))
    parse_naive = statistics.median(seconds(PARSE_NAIVE) for _ in range(args.repeats))
    print(f"light job imports      : {light:6.2f} s (median of {args.repeats})")
    print(f"all-in-one imports     : {naive:6.2f} s (median of {args.repeats})")
    print(f"ratio                  : {naive / light:6.1f}x")
    print(f"Snakefile parse imports: {parse:6.2f} s (median of {args.repeats})")
    print(f"  with kneurons.perturb: {parse_naive:6.2f} s (median of {args.repeats})")
    print(f"ratio                  : {parse_naive / parse:6.1f}x")


if __name__ == "__main__":
    main()
