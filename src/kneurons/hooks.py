"""Temporary forward hooks on the decoder's act_fn modules; every hook is removed when the block exits.

An edit applies only to forward passes that see the whole prompt (sequence length equal to the image mask's),
so with a KV cache the decode steps run untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

# edit(layer, O) -> O', both (B, T, d_ff); applied where the image mask is set.
Edit = Callable[[int, torch.Tensor], torch.Tensor]


@contextmanager
def edit_image_activations(act_fns: Sequence[nn.Module], image_mask: torch.Tensor, edit: Edit) -> Iterator[None]:
    """Within the block, replace O[l] by ``edit(l, O[l])`` at the image positions of ``image_mask`` (B, T) bool."""
    mask = image_mask[..., None]

    def make_hook(layer: int) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if output.shape[:2] != image_mask.shape:
                return None
            return torch.where(mask, edit(layer, output), output)

        return hook

    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(act_fns)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def zero_edit(_layer: int, output: torch.Tensor) -> torch.Tensor:
    """An Edit that ablates: every unit's output becomes 0."""
    return torch.zeros_like(output)
