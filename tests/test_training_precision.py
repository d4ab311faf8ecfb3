"""The captioner's training precision: bfloat16 autocast where the CPU has native bfloat16, float32 elsewhere."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from kneurons.coco import image_records, load_coco, read_image
from kneurons.inpaint import remove_objects
from kneurons.synth import captioner
from kneurons.synth.captioner import TrainingInputs, train_captioner, training_batch, training_precision
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


def test_kept_inputs_equal_the_processors_own_batches(tiny_split):
    """Each example processed once and kept gives the batches the processor gives each batch anew (pixels
    bfloat16-rounded when kept in bfloat16), its labels included; a key's image and text are asked for once."""
    records = image_records(load_coco(tiny_split[0]), tiny_split[1])
    tokenizer = captioner.build_tokenizer(
        [PROMPT.replace("<image>", " ")] + [captioner.record_caption(r) for r in records]
    )
    processor = captioner.build_processor(tokenizer, TINY)
    prompt_len = len(processor(images=[read_image(records[0].path)], text=[PROMPT])["input_ids"][0])
    asked = []

    def example(key):
        asked.append(key)
        i, removed = key
        img = read_image(records[i].path)
        if removed is not None:
            img = remove_objects(img, [records[i].annotations[removed]], source="box", dilate=1)
        return img, f"{PROMPT} {captioner.record_caption(records[i], removed)}{tokenizer.eos_token}"

    several = next(i for i, r in enumerate(records) if len(r.annotations) > 1)
    draws = [[(0, None), (several, 1), (0, None), (2, None)], [(several, 0), (0, None), (several, 1), (5, None)]]
    for dtype in (torch.float32, torch.bfloat16):
        inputs, asked[:] = TrainingInputs(processor, prompt_len, dtype), []
        for keys in draws:
            batch, labels = inputs.batch(keys, example)
            ref, ref_labels = training_batch(processor, *map(list, zip(*map(example, keys), strict=True)), prompt_len)
            for key in ("input_ids", "attention_mask"):
                assert torch.equal(batch[key], ref[key]), key
            assert torch.equal(batch["pixel_values"], ref["pixel_values"].to(dtype))
            assert torch.equal(labels, ref_labels) and (labels != -100).any()
        assert asked.count((several, 1)) == 1 + 2  # once kept, twice for the references
