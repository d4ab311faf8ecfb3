"""The captioner's training precision: bfloat16 autocast where the CPU has native bfloat16, float32 elsewhere."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from kneurons.coco import image_records, load_coco
from kneurons.synth import captioner
from kneurons.synth.captioner import train_captioner, training_precision
from tests.conftest import PROMPT, TINY


@pytest.mark.parametrize(
    ("caps", "setting", "expected"),
    [
        ({"avx512_bf16": True, "amx_bf16": False}, "auto", "bfloat16"),
        ({"avx512_bf16": False, "amx_bf16": True}, "auto", "bfloat16"),
        ({"avx512_bf16": False, "amx_bf16": False, "avx2": True}, "auto", "float32"),
        ({"avx2": True}, "auto", "float32"),  # a torch that does not report the key at all
        ({"avx512_bf16": True}, "float32", "float32"),
        ({}, "bfloat16", "bfloat16"),
    ],
)
def test_auto_follows_the_cpu(monkeypatch, caps, setting, expected):
    monkeypatch.setattr(captioner.torch.cpu, "get_capabilities", lambda: caps)
    assert training_precision(setting) == expected


def _train(tiny_split, tmp_path, precision: str):
    out = tmp_path / precision
    records = image_records(load_coco(tiny_split[0]), tiny_split[1])
    settings = dataclasses.replace(TINY, steps=3, precision=precision)
    summary = train_captioner(records, PROMPT, out, settings, log=lambda _m: None)
    return summary, out


def test_precision_is_applied_and_recorded(tiny_split, tmp_path):
    """bfloat16 autocast changes the weights after 3 steps, float32 twice gives the same weights, both save float32
    weights and record the precision; the saved config does not pin the training's eager attention."""
    runs = {p: _train(tiny_split, tmp_path, p) for p in ("float32", "bfloat16")}
    _, again = _train(tiny_split, tmp_path / "again", "float32")
    weights = {p: load_file(out / "model.safetensors") for p, (_, out) in runs.items()}
    for p, (summary, out) in runs.items():
        assert summary["precision"] == p
        assert json.loads((out / "training.json").read_text())["precision"] == p
        assert "eager" not in (out / "config.json").read_text()
        assert all(t.dtype == torch.float32 for t in weights[p].values())
    assert any(not torch.equal(weights["float32"][k], weights["bfloat16"][k]) for k in weights["float32"])
    repeat = load_file(again / "model.safetensors")
    assert all(torch.equal(weights["float32"][k], repeat[k]) for k in repeat)
