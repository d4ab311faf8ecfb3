"""Weight edits (kneurons.edit) against known answers: erasing a unit's W_down column equals a hook that zeroes the
unit at every position and every decoding step; strength 1 / λ 0 change nothing; only the named columns change;
undo is bit for bit, an exception included; the exported directory loads with plain transformers and captions as
the in-place edit does."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from kneurons import KnowledgeNeurons
from kneurons.edit import Edit, edited_columns, rewrite_direction
from kneurons.errors import KneuronsError
from kneurons.models import load_model
from tests.conftest import PROMPT

UNITS = [(0, 3), (0, 17), (1, 5), (1, 40), (1, 5)]  # a duplicate: edited once


@pytest.fixture(scope="module")
def kn(tiny_model_dir) -> KnowledgeNeurons:
    return KnowledgeNeurons.load(tiny_model_dir, prompt=PROMPT, dtype="float32")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(4)]


def snapshot(kn) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in kn.loaded.model.state_dict().items()}


@contextmanager
def scaled_everywhere(kn, units, alpha: float):
    """The oracle: forward hooks that scale act_fn's output of ``units`` by ``alpha`` at every position of every
    forward pass (the prompt pass and each decoding step)."""
    handles = []
    for layer, act in enumerate(kn.loaded.act_fns):
        cols = sorted({u for lyr, u in units if lyr == layer})
        if cols:

            def hook(_m, _i, out, cols=cols):
                out = out.clone()
                out[..., cols] *= alpha
                return out

            handles.append(act.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_erase_equals_scaling_the_units_at_every_position_and_step(kn, images, alpha):
    with scaled_everywhere(kn, UNITS, alpha):
        want = kn.caption(images, max_new_tokens=12)
        inputs = kn.loaded.processor(images=[images[0]], text=[PROMPT], return_tensors="pt")
        with torch.no_grad():
            want_logits = kn.loaded.model(**inputs).logits
    with kn.edited(UNITS, "erase", alpha):
        assert kn.caption(images, max_new_tokens=12) == want
        with torch.no_grad():
            got_logits = kn.loaded.model(**inputs).logits
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)


def test_erasing_changes_what_the_model_says(kn, images):
    every = [(layer, u) for layer in range(kn.loaded.n_layers) for u in range(kn.loaded.d_ff)]
    clean = kn.caption(images, max_new_tokens=12)
    with kn.edited(every, "erase", 0.0):
        assert kn.caption(images, max_new_tokens=12) != clean


@pytest.mark.parametrize(("op", "strength"), [("amplify", 1.0), ("erase", 1.0), ("rewrite", 0.0)])
def test_the_identity_strengths_change_nothing(kn, op, strength):
    before = snapshot(kn)
    with kn.edited(UNITS, op, strength, source="bear", target="dog"):
        for name, value in kn.loaded.model.state_dict().items():
            assert torch.equal(value, before[name]), name


def test_only_the_named_columns_change_and_undo_is_bit_for_bit(kn):
    before = snapshot(kn)
    with pytest.raises(RuntimeError, match="inside"), kn.edited(UNITS, "amplify", 3.0):
        during = snapshot(kn)
        raise RuntimeError("inside")
    changed = {name for name in before if not torch.equal(before[name], during[name])}
    assert changed == {f"model.language_model.layers.{layer}.mlp.down_proj.weight" for layer in (0, 1)}
    for layer in (0, 1):
        name = f"model.language_model.layers.{layer}.mlp.down_proj.weight"
        cols = sorted({u for lyr, u in UNITS if lyr == layer})
        other = [c for c in range(before[name].shape[1]) if c not in cols]
        assert torch.equal(during[name][:, other], before[name][:, other])
        torch.testing.assert_close(during[name][:, cols], 3.0 * before[name][:, cols])
    after = snapshot(kn)
    assert all(torch.equal(after[name], before[name]) for name in before)


def test_rewrite_moves_each_column_along_the_words_unembedding_difference(kn):
    tok = kn.loaded.processor.tokenizer
    head = kn.loaded.model.get_output_embeddings().weight.detach().float()
    delta = head[tok.convert_tokens_to_ids("dog")] - head[tok.convert_tokens_to_ids("bear")]  # word-level ids
    torch.testing.assert_close(rewrite_direction(kn.loaded, "bear", "dog"), delta / delta.norm())
    w = torch.randn(8, 3)
    moved = edited_columns(w, Edit("rewrite", 0.25, "bear", "dog"), delta[:8] / delta[:8].norm())
    np.testing.assert_allclose((moved - w).norm(dim=0).numpy(), 0.25 * w.norm(dim=0).numpy(), rtol=1e-5)


def test_bad_edits_are_one_line(kn, tmp_path):
    with pytest.raises(KneuronsError, match=r"edited: neuron \(0, 9999\) is not in this model"):
        kn.edited([(0, 9999)], "erase", 0.0)
    with pytest.raises(KneuronsError, match="op 'delete' is not one of erase, amplify, rewrite"):
        kn.edited(UNITS, "delete", 0.0)
    with pytest.raises(KneuronsError, match="a rewrite needs the word"):
        kn.edited(UNITS, "rewrite", 0.1)


def test_the_exported_model_loads_with_transformers_and_captions_as_the_edit(kn, images, tmp_path, tiny_model_dir):
    sets = tmp_path / "set.json"
    sets.write_text(json.dumps({"neurons": [[layer, unit, 0.5] for layer, unit in UNITS]}))
    out = tmp_path / "edited"
    cmd = [sys.executable, "-m", "kneurons.edit", "--model", str(tiny_model_dir), "--set", str(sets)]
    proc = subprocess.run([*cmd, "--op", "erase", "--strength", "0", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    AutoModelForImageTextToText.from_pretrained(out)  # plain transformers reads it
    original, written = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(original) == set(written)
    for name, value in original.items():
        if name.endswith("mlp.down_proj.weight") and name.split(".")[-4] in ("0", "1"):
            layer = int(name.split(".")[-4])
            cols = sorted({u for lyr, u in UNITS if lyr == layer})
            assert torch.equal(written[name][:, cols], torch.zeros_like(value[:, cols]))
            keep = [c for c in range(value.shape[1]) if c not in cols]
            assert torch.equal(written[name][:, keep], value[:, keep])
        else:
            assert torch.equal(written[name], value), name
    exported = KnowledgeNeurons(load_model(out, dtype="float32"), PROMPT)
    with kn.edited(UNITS, "erase", 0.0):
        assert exported.caption(images, max_new_tokens=12) == kn.caption(images, max_new_tokens=12)
    # a unit outside the model: one line naming the set file and the unit, and no directory
    sets.write_text(json.dumps({"neurons": [[0, 9999, 0.5]]}))
    bad = [*cmd, "--op", "erase", "--strength", "0", "--out", str(tmp_path / "bad")]
    proc = subprocess.run(bad, capture_output=True, text=True)
    assert proc.returncode == 2 and not (tmp_path / "bad").exists()
    assert proc.stderr.strip().splitlines()[-1] == (
        f"kneurons.edit: {sets}: neuron (0, 9999) is not in this model: layers 0-1, units 0-{kn.loaded.d_ff - 1}"
    )
