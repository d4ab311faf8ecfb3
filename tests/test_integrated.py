"""Integrated gradients (kneurons.integrated) against known answers: on a network whose output is linear in a hooked
activation, IG is activation × gradient exactly for any number of steps; completeness (the sum of IG over a layer's
units equals the change of the output from the baseline, checked against a fine Riemann sum and against plain
forwards); the scaled copies in one batch equal one pass per step; and on a model, the probability of the gold
token (not the argmax) is what is integrated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kneurons.dumps import target_prefix
from kneurons.hooks import edit_image_activations, zero_edit
from kneurons.integrated import integrated_gradients, path_integrals
from kneurons.models import load_model
from tests.conftest import PROMPT

T, D, F = 7, 5, 6  # positions, hidden, d_ff
MASK = torch.tensor([False, True, True, True, False, False, False])  # image positions 1-3


class Toy(nn.Module):
    """x → act0(x W0) → act1(tanh(·) W1) → y = Σ_(p, i) v[i] · O1[p, i]: linear in layer 1's act output, not in layer
    0's."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(T, D, generator=g)
        self.w0 = torch.randn(D, F, generator=g)
        self.w1 = torch.randn(F, F, generator=g) / 2
        self.v = torch.randn(F, generator=g)
        self.act0, self.act1 = nn.SiLU(), nn.Identity()

    def forward(self, n: int, scale0: float = 1.0) -> torch.Tensor:
        o0 = self.act0(self.x[None].expand(n, -1, -1) @ self.w0)
        o0 = torch.where(MASK[None, :, None], o0 * scale0, o0)
        o1 = self.act1(torch.tanh(o0) @ self.w1)
        return (o1 * self.v).sum(dim=(1, 2))


@pytest.fixture(scope="module")
def toy() -> Toy:
    return Toy()


def ig(toy: Toy, steps: int, rows: int = 64) -> torch.Tensor:
    return path_integrals([toy.act0, toy.act1], MASK, toy.forward, steps, rows)


def test_where_the_output_is_linear_ig_is_activation_times_gradient_for_any_steps(toy):
    o0 = toy.act0(toy.x @ toy.w0)
    o1 = (torch.tanh(o0) @ toy.w1)[MASK]  # layer 1's act output at the image positions, (P, d_ff)
    for steps in (1, 3, 20):
        torch.testing.assert_close(ig(toy, steps)[1], o1 * toy.v, rtol=1e-5, atol=1e-6)


def test_completeness_the_sum_over_units_is_the_change_from_the_baseline(toy):
    with torch.no_grad():
        change = float(toy.forward(1)[0] - toy.forward(1, scale0=0.0)[0])
    fine = float(ig(toy, 4000)[0].sum())
    assert fine == pytest.approx(change, rel=1e-3)  # the Riemann sum converges to the path integral
    coarse = float(ig(toy, 20)[0].sum())
    assert coarse != pytest.approx(change, rel=1e-4)  # a left sum of 20 steps is not exact (not vacuous) ...
    assert abs(coarse - change) < 0.05 * abs(change) + 1e-3  # ... but close


def test_batched_steps_equal_one_pass_per_step(toy):
    torch.testing.assert_close(ig(toy, 20, rows=64), ig(toy, 20, rows=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ig(toy, 20, rows=64), ig(toy, 20, rows=7), rtol=1e-5, atol=1e-6)  # ragged chunks


def test_on_a_model_the_gold_tokens_probability_is_integrated(tiny_model_dir):
    loaded = load_model(tiny_model_dir, dtype="float32")
    image = np.random.default_rng(5).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    target = target_prefix(loaded, image, PROMPT, " a bear on grass", "bear")
    inputs = target.inputs
    mask = loaded.image_positions(inputs["input_ids"])

    def probability(zero_layer: int | None = None) -> tuple[float, int]:
        def edit(layer: int, *at: torch.Tensor) -> None:
            if layer == zero_layer:
                zero_edit(layer, *at)

        with torch.no_grad(), edit_image_activations(loaded.act_fns, mask, edit):
            logits = loaded.model(**inputs, position_ids=loaded.positions(inputs)).logits[0, -1].float()
        return float(torch.softmax(logits, -1)[target.token_id]), int(logits.argmax())

    full, argmax = probability()
    assert argmax != target.token_id  # the gold token is not what the model would say: not vacuous
    scores = integrated_gradients(loaded, target, steps=400, rows=200)
    assert scores.shape == (loaded.n_layers, int(mask.sum()), loaded.d_ff)
    for layer in range(loaded.n_layers):
        change = full - probability(layer)[0]
        assert float(scores[layer].sum()) == pytest.approx(change, rel=0.02, abs=1e-6), layer


def test_on_a_swiglu_decoder_the_act_fn_site_gives_the_ig_of_down_projs_input(tiny_model_dir):
    """act_fn(gate) · up is down_proj's input: scaling either factor by α scales the product by α, and a · ∂P/∂a =
    (a · u) · ∂P/∂(a · u), so IG at the act_fn output (kneurons' hook) equals IG at down_proj's true input, unit by
    unit; checked by hooking an identity placed before each down_proj."""
    loaded = load_model(tiny_model_dir, dtype="float32")
    image = np.random.default_rng(6).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    target = target_prefix(loaded, image, PROMPT, " a bear on grass", "bear")
    at_act = integrated_gradients(loaded, target, steps=8)
    layers = loaded.model.get_decoder().layers
    originals = [layer.mlp.down_proj for layer in layers]
    inputs_of_down = [nn.Identity() for _ in layers]
    try:
        for layer, identity, down in zip(layers, inputs_of_down, originals, strict=True):
            layer.mlp.down_proj = nn.Sequential(identity, down)

        def forward(n: int) -> torch.Tensor:
            batch = {k: torch.cat([v] * n) for k, v in target.inputs.items()}
            logits = loaded.model(**batch, position_ids=loaded.positions(batch)).logits[:, -1].float()
            return torch.softmax(logits, -1)[:, target.token_id]

        mask = loaded.image_positions(target.inputs["input_ids"])[0]
        at_down = path_integrals(inputs_of_down, mask, forward, steps=8).numpy()
    finally:
        for layer, down in zip(layers, originals, strict=True):
            layer.mlp.down_proj = down
    assert not np.allclose(at_act, 0)
    np.testing.assert_allclose(at_down, at_act, rtol=1e-4, atol=1e-7)
