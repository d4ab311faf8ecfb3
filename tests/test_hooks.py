"""Act_fn hooks: edits land exactly at the image positions of the prompt pass and never outlive their block."""

from __future__ import annotations

import pytest
import torch

from kneurons.coco import image_records, load_coco, read_image
from kneurons.generation import prompt_inputs
from kneurons.hooks import edit_image_activations, zero_edit
from kneurons.models import load_model

from .conftest import PROMPT


def _capture(loaded, inputs):
    seen = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, layer=i: seen.__setitem__(layer, out.detach().clone()))
        for i, m in enumerate(loaded.act_fns)
    ]
    try:
        with torch.no_grad():
            loaded.model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.fixture(scope="module")
def loaded_inputs(tiny_model_dir, tiny_split):
    loaded = load_model(tiny_model_dir)
    images = [read_image(r.path) for r in image_records(load_coco(tiny_split[0]), tiny_split[1])[:2]]
    return loaded, prompt_inputs(loaded, images, PROMPT)


def test_zero_edit_hits_image_positions_only(loaded_inputs):
    loaded, inputs = loaded_inputs
    mask = loaded.image_positions(inputs["input_ids"])
    # capture after the zeroing hook: registration order puts the capture hook second
    with edit_image_activations(loaded.act_fns, mask, zero_edit):
        seen = _capture(loaded, inputs)
    clean = _capture(loaded, inputs)
    for layer in range(loaded.n_layers):
        assert torch.all(seen[layer][mask] == 0)
        assert clean[layer][mask].abs().sum() > 0
    # layer 0 sees the same input either way, so its text positions are untouched
    assert torch.equal(seen[0][~mask], clean[0][~mask])


def test_hooks_removed_after_exception(loaded_inputs):
    loaded, inputs = loaded_inputs
    mask = loaded.image_positions(inputs["input_ids"])
    with pytest.raises(RuntimeError), edit_image_activations(loaded.act_fns, mask, zero_edit):
        raise RuntimeError("boom")
    assert all(len(m._forward_hooks) == 0 for m in loaded.act_fns)
    with torch.no_grad():
        a = loaded.model(**inputs).logits
    assert torch.isfinite(a).all()
