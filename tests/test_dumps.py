"""Captured activations and GradCAM against values recomputed by hand and by plain autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kneurons.coco import image_records, load_coco, read_image
from kneurons.dumps import gradcam, image_activations, target_position, unit_logits
from kneurons.generation import prompt_inputs
from kneurons.models import load_model

from .conftest import PROMPT


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_split):
    loaded = load_model(tiny_model_dir)
    rec = image_records(load_coco(tiny_split[0]), tiny_split[1])[0]
    name = rec.annotations[0].category
    caption = f" {rec.extra['background']} with a {name} ."  # the text after the prompt, exactly
    return loaded, read_image(rec.path), name, caption


def test_captured_activations_are_silu_of_gate_proj(setup):
    loaded, image, _, _ = setup
    inputs = prompt_inputs(loaded, [image], PROMPT)
    mlp_inputs = {}
    layers = loaded.model.get_decoder().layers
    handles = [
        layer.mlp.register_forward_pre_hook(lambda _m, args, i=i: mlp_inputs.__setitem__(i, args[0].detach()))
        for i, layer in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            loaded.model(**inputs)
    finally:
        for h in handles:
            h.remove()
    o, layout = image_activations(loaded, [image], PROMPT)[0]
    assert o.shape == (loaded.n_layers, 64, loaded.d_ff) and layout.n_tokens == 64
    mask = loaded.image_positions(inputs["input_ids"])[0]
    for i, layer in enumerate(layers):
        x = mlp_inputs[i][0, mask]
        by_hand = torch.nn.functional.silu(x @ layer.mlp.gate_proj.weight.T)
        np.testing.assert_allclose(o[i], by_hand.numpy(), rtol=1e-5, atol=1e-6)


class _Recorder(nn.Module):
    """Stands in for an act_fn (no hooks): computes SiLU and keeps the output in the graph."""

    def __init__(self, store: list, layer: int) -> None:
        super().__init__()
        self.store, self.layer = store, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.silu(x)
        self.store[self.layer] = out
        return out


def test_gradcam_equals_plain_autograd(setup):
    loaded, image, name, caption = setup
    cam = gradcam(loaded, image, PROMPT, caption, name)
    # the position by hand: the processor's ids of prompt + caption; c is k's word, the last of its ids in them
    inputs = loaded.processor(images=[image], text=[f"{PROMPT} {caption}"], return_tensors="pt")
    k_id = loaded.processor.tokenizer.convert_tokens_to_ids(name.split()[0])
    j = inputs["input_ids"][0].tolist().index(k_id)
    assert cam.position == j - 1 and cam.token_id == k_id
    assert cam.token == name.split()[0]

    # reference: swap each act_fn for a recorder module and differentiate with torch.autograd.grad
    model = load_model(loaded.path).model
    layers = model.get_decoder().layers
    store: list = [None] * len(layers)
    for i, layer in enumerate(layers):
        layer.mlp.act_fn = _Recorder(store, i)
    model.get_input_embeddings().weight.requires_grad_(True)
    ids = inputs["input_ids"][:, :j]
    logit = model(input_ids=ids, attention_mask=inputs["attention_mask"][:, :j], pixel_values=inputs["pixel_values"])
    y = logit.logits[0, -1, cam.token_id]
    grads = torch.autograd.grad(y, store)
    mask = ids[0] == loaded.image_token_id
    ref = np.stack([(o[0, mask] * g[0, mask]).detach().numpy() for o, g in zip(store, grads, strict=True)])
    np.testing.assert_allclose(cam.gradcam, ref, rtol=1e-4, atol=1e-7)
    assert np.abs(cam.gradcam).sum() > 0
    # the last layer's image positions reach no later token: zero GradCAM there
    assert np.all(cam.gradcam[-1] == 0)


def test_unit_logits_match_weights(setup):
    loaded, _, _, _ = setup
    d = unit_logits(loaded, 7)
    layer = loaded.model.get_decoder().layers[1]
    w_u = loaded.model.get_output_embeddings().weight[7]
    np.testing.assert_allclose(d[1], (w_u @ layer.mlp.down_proj.weight).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_target_position_rejects_a_caption_without_k(setup):
    loaded, image, _, _ = setup
    with pytest.raises(ValueError, match="does not mention"):
        target_position(loaded, image, PROMPT, "grassy field .", "giraffe")
