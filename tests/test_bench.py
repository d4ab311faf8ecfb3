"""The GPU bench runs at tiny shapes on the CPU, so it cannot rot before a GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys

from .helpers import REPO


def test_gpu_scale_runs_at_tiny_shapes_and_writes_every_field(tmp_path):
    out = tmp_path / "gpu_scale.json"
    cmd = [sys.executable, str(REPO / "bench/gpu_scale.py"), "--shapes", "tiny", "--device", "cpu"]
    cmd += ["--dtypes", "bfloat16", "--sizes", "576", "64", "--rows", "12", "--batch", "6", "--naive-rows", "2"]
    cmd += ["--max-new-tokens", "3", "--matmul", "128", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["shapes"] == "tiny"
    assert [(r["P"], r["dtype"]) for r in result["runs"]] == [(576, "bfloat16"), (64, "bfloat16")]
    for r in result["runs"]:
        assert r["prompt_tokens"] > r["P"]  # the image tokens and the prompt's words
        assert r["ms_per_caption_generate"] > 0 and r["ms_per_caption_batched"] > 0
        ratio = r["ms_per_caption_generate"] / r["ms_per_caption_batched"]
        assert abs(r["speedup_batched_vs_generate"] - ratio) < 0.02 * ratio + 0.01
        assert r["share_of_peak"] > 0 and r["prompt_pass_tflops"] > 0
        assert set(r["peak_memory_gib"]) == {"activations", "gradcam", "perturb"}  # null on a CPU
