"""Temporary forward hooks on the decoder's act_fn modules; every hook is removed when the block exits.

An edit applies only to forward passes that see the whole prompt (sequence length equal to the image mask's),
so with a KV cache the decode steps run untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

# edit(layer, O, rows, cols) changes O (B, T, d_ff) in place at the image positions O[rows, cols], where rows and
# cols are (N,) index tensors over every image position of the batch, row by row (row b contributes its own P_b
# positions, in order). Edits touch only what they change (a few units of a 7B model's (B, T, 11008) output).
Edit = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


@contextmanager
def _hooked(act_fns: Sequence[nn.Module], make_hook: Callable[[int], Callable]) -> Iterator[None]:
    """Within the block, ``make_hook(layer)`` is a forward hook on each layer's act_fn; removed on exit."""
    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(act_fns)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def edit_image_activations(act_fns: Sequence[nn.Module], image_mask: torch.Tensor, edit: Edit) -> Iterator[None]:
    """Within the block, let ``edit`` change each layer's O[l] at the image positions of ``image_mask`` (B, T) bool
    (P_b positions in row b); the other positions keep their values."""
    rows, cols = image_mask.nonzero(as_tuple=True)

    def make_hook(layer: int) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if output.shape[:2] != image_mask.shape:
                return None
            if output.requires_grad:  # keep autograd's view of the original output intact
                output = output.clone()
            edit(layer, output, rows.to(output.device), cols.to(output.device))  # O's device (sharded models)
            return output

        return hook

    with _hooked(act_fns, make_hook):
        yield


@contextmanager
def scaled_layers(
    act_fns: Sequence[nn.Module], image_mask: torch.Tensor, layer_of_row: torch.Tensor, alpha: torch.Tensor
) -> Iterator[tuple[list[torch.Tensor | None], list[torch.Tensor | None]]]:
    """Within the block, each row b's act_fn output of layer ``layer_of_row[b]`` at the image positions of
    ``image_mask`` (B, T) is scaled by ``alpha[b]``; yields, per layer, the unscaled O' of its rows at the image
    positions (n_rows_l · P, d_ff) and, after a backward pass, the gradient reaching the scaled O' there."""
    n = len(act_fns)
    original: list[torch.Tensor | None] = [None] * n
    grads: list[torch.Tensor | None] = [None] * n

    def make_hook(layer: int) -> Callable:
        rows = (layer_of_row == layer).nonzero().squeeze(1)
        if not len(rows):
            return lambda *_: None

        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if output.shape[:2] != image_mask.shape:
                return None
            at = torch.zeros(image_mask.shape, dtype=torch.bool, device=output.device)
            at[rows.to(output.device)] = image_mask[rows].to(output.device)
            original[layer] = output[at].detach()
            scale = torch.ones(image_mask.shape, dtype=output.dtype, device=output.device)
            scale[at] = alpha.to(output.device, output.dtype)[:, None].expand(image_mask.shape)[at]
            out = output * scale[..., None]
            if not out.requires_grad:
                out.requires_grad_(True)
            out.register_hook(lambda g: grads.__setitem__(layer, g[at].detach()))
            return out

        return hook

    with _hooked(act_fns, make_hook):
        yield original, grads


def zero_edit(_layer: int, output: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """An Edit that ablates: every unit's output at the image positions becomes 0."""
    output[rows, cols] = 0


class ImageActivations:
    """What a capture recorded, per layer: O'[l] and (with gradients) ∂y/∂O'[l] at every image position of the
    batch, each (N, d_ff) with N = Σ_b P_b; ``counts`` (B,) holds each row's P_b."""

    def __init__(self, n_layers: int, counts: list[int]) -> None:
        self.counts = counts
        self.activations: list[torch.Tensor | None] = [None] * n_layers
        self.gradients: list[torch.Tensor | None] = [None] * n_layers

    def _per_image(self, parts: list[torch.Tensor | None], what: str) -> list[torch.Tensor]:
        if any(p is None for p in parts):
            raise RuntimeError(f"no {what} captured for some layer: did the forward (and backward) pass run?")
        return list(torch.stack(parts).split(self.counts, dim=1))  # type: ignore[arg-type]

    def activations_per_image(self) -> list[torch.Tensor]:
        """O' of every layer for each row b: (L, P_b, d_ff)."""
        return self._per_image(self.activations, "activations")

    def gradients_per_image(self) -> list[torch.Tensor]:
        """∂y/∂O' of every layer for each row b: (L, P_b, d_ff)."""
        return self._per_image(self.gradients, "gradients")


@contextmanager
def capture_image_activations(
    act_fns: Sequence[nn.Module], image_mask: torch.Tensor, gradients: bool = False
) -> Iterator[ImageActivations]:
    """Record each layer's act_fn output at the image positions of ``image_mask`` (B, T) bool.

    Rows may hold different numbers of image positions. With ``gradients=True`` a tensor hook inside the
    forward hook also records the gradient reaching each O'[l] in the next backward pass; the output is made to
    require grad where nothing upstream does (so no parameter needs a gradient). Hooks are removed on exit.
    """
    rec = ImageActivations(len(act_fns), image_mask.sum(dim=1).tolist())

    def at_images(t: torch.Tensor) -> torch.Tensor:
        return t[image_mask.to(t.device)]

    def make_hook(layer: int) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if output.shape[:2] != image_mask.shape:
                return None
            rec.activations[layer] = at_images(output).detach()
            if not gradients:
                return None
            if not output.requires_grad:
                output.requires_grad_(True)
            output.register_hook(lambda grad: rec.gradients.__setitem__(layer, at_images(grad).detach()))
            return output

        return hook

    with _hooked(act_fns, make_hook):
        yield rec
