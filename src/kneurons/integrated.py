"""Integrated gradients over the FFN activations at the image positions (Dai et al.'s knowledge neurons), done as
their code does it: for one layer l at a time, the act_fn output O'[l] at every image position is scaled together
from 0 (the baseline) towards its value, α = s / m for s = 0 … m − 1 (a left Riemann sum of m steps, Dai et al.'s
``scaled_input``), the other layers untouched; at each step the gradient of the probability (softmax, not the
logit) of k's first token, teacher-forced at the position that predicts it on the gold caption (never the argmax),
with respect to the scaled O'[l]; and

    IG[l, p, i] = O'[l, p, i] / m · Σ_s ∂P(c) / ∂O'[l, p, i] |_(α_s O'[l])

A unit's score is Σ_p IG[l, p, i]: the image positions are scaled together along one path, so the per-(position,
unit) attributions add up, with the other units', to the change of P(c) from the baseline (completeness), and a
unit's share of it is their sum (a max over positions would drop the signs of the others).

Rows (layer, step) are batched: one forward and backward pass over up to ``rows`` scaled copies of the prompt, each
row scaling its own layer (a row's output depends on its own copy only, so one backward gives every row's
gradient).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from kneurons.dumps import Target
from kneurons.generation import collate
from kneurons.hooks import scaled_layers
from kneurons.models import LoadedModel

IG_STEPS = 20  # Dai et al.'s m (batch_size 20 × num_batch 1)


def path_integrals(
    act_fns: Sequence[nn.Module],
    image_mask: torch.Tensor,
    forward: Callable[[int], torch.Tensor],
    steps: int = IG_STEPS,
    rows: int = 20,
) -> torch.Tensor:
    """IG (L, P, d_ff) float32 of the output ``forward(n)`` returns, (n,) for n copies of one input whose image
    positions are ``image_mask`` (T,) bool, against the act_fn outputs of ``act_fns`` (one per layer), ``steps``
    steps per layer, at most ``rows`` (layer, step) rows per forward and backward pass."""
    n_layers = len(act_fns)
    plan = [(layer, s) for layer in range(n_layers) for s in range(steps)]
    total: list[torch.Tensor | None] = [None] * n_layers
    activations: list[torch.Tensor | None] = [None] * n_layers
    p = int(image_mask.sum())
    for start in range(0, len(plan), rows):
        chunk = plan[start : start + rows]
        mask = image_mask[None].expand(len(chunk), -1)
        layer_of_row = torch.tensor([layer for layer, _ in chunk])
        alpha = torch.tensor([s / steps for _, s in chunk], dtype=torch.float32)
        with torch.enable_grad(), scaled_layers(act_fns, mask, layer_of_row, alpha) as (original, grads):
            forward(len(chunk)).sum().backward()
        for layer in sorted({layer for layer, _ in chunk}):
            g = grads[layer].float().reshape(-1, p, grads[layer].shape[-1]).sum(dim=0)  # Σ over this chunk's steps
            total[layer] = g if total[layer] is None else total[layer] + g.to(total[layer].device)
            activations[layer] = original[layer].float().reshape(-1, p, original[layer].shape[-1])[0]
    return torch.stack([(a * t.to(a.device) / steps).cpu() for a, t in zip(activations, total, strict=True)])


def integrated_gradients(loaded: LoadedModel, target: Target, steps: int = IG_STEPS, rows: int = 20) -> np.ndarray:
    """IG (L, P, d_ff) float32 of every unit at every image position for P(c), the probability of ``target``'s
    token c at the last position of its prefix (the gold caption before c, teacher-forced), ``steps`` steps per
    layer and at most ``rows`` scaled copies of the prefix per pass."""

    def forward(n: int) -> torch.Tensor:
        inputs = collate(loaded, [target.inputs] * n)
        logits = loaded.model(**inputs, position_ids=loaded.positions(inputs), logits_to_keep=1).logits
        return torch.softmax(logits[:, -1].float(), dim=-1)[:, target.token_id]

    mask = loaded.image_positions(target.inputs["input_ids"])[0]
    return path_integrals(loaded.act_fns, mask, forward, steps, rows).numpy()
