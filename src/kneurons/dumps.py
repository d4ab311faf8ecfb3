"""What the model computes for the method: image-position activations O' and GradCAM g for one target token."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kneurons.captions import mention_span
from kneurons.errors import ModelError
from kneurons.generation import Continuation, collate, extended, image_inputs
from kneurons.hooks import capture_image_activations
from kneurons.models import LoadedModel, weight_of


@dataclass(frozen=True)
class TokenLayout:
    """Where one image's P image tokens sit and what they cover: ``positions`` (P,) int64, their indices in the
    image's own ``input_ids`` (the prompt, unpadded); ``regions`` (P, 4) float64 [x0, y0, x1, y1] in pixels of the
    original image, NaN for a token that covers none (kneurons.families)."""

    positions: np.ndarray
    regions: np.ndarray

    @property
    def n_tokens(self) -> int:
        """P of this image."""
        return len(self.positions)

    def record(self) -> dict[str, np.ndarray]:
        """The layout as dump datasets: ``token_positions`` (P,) and ``token_regions`` (P, 4)."""
        return {"token_positions": self.positions, "token_regions": self.regions}


def token_layout(loaded: LoadedModel, inputs: dict[str, torch.Tensor], size: tuple[int, int]) -> TokenLayout:
    """The layout of the image tokens in one image's processor output ``inputs`` (a batch of one) for an original
    image of (H, W) = ``size``."""
    positions = loaded.image_positions(inputs["input_ids"])[0].nonzero().squeeze(1).cpu().numpy()
    return TokenLayout(positions=positions.astype(np.int64), regions=loaded.regions(inputs, size))


@torch.inference_mode()
def image_activations(
    loaded: LoadedModel, images: Sequence[np.ndarray], prompt: str
) -> list[tuple[np.ndarray, TokenLayout]]:
    """O' of each image, (L, P_i, d_ff) float32, with its token layout, from one forward pass of the prompt over the
    batch (left-padded where the images' P differ).

    Image tokens precede the text in a causal decoder, so O' does not depend on any caption that follows.
    """
    parts = image_inputs(loaded, images, prompt)
    inputs = collate(loaded, parts)
    with capture_image_activations(loaded.act_fns, loaded.image_positions(inputs["input_ids"])) as rec:
        loaded.model(**inputs, position_ids=loaded.positions(inputs))
    layouts = [token_layout(loaded, part, image.shape[:2]) for part, image in zip(parts, images, strict=True)]
    activations = [o.float().cpu().numpy() for o in rec.activations_per_image()]
    return list(zip(activations, layouts, strict=True))


@dataclass
class GradCam:
    """GradCAM of one sample: g and O' (L, P, d_ff), the target token c and the position that predicts it,
    D[:, c] (L, d_ff), each unit's direct contribution to c's logit (for Pan's score), and the image's token
    layout."""

    gradcam: np.ndarray
    activations: np.ndarray
    token_id: int
    token: str
    position: int
    unit_logit: np.ndarray
    layout: TokenLayout


def token_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """For each token of ``ids``, the length of the text the ids up to and including it decode to (special tokens
    skipped): token i covers the decoded text's characters [ends[i - 1], ends[i])."""
    return [len(tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True)) for i in range(len(ids))]


def target_position(
    loaded: LoadedModel,
    image: np.ndarray,
    prompt: str,
    caption: str,
    name: str,
    synonyms: Iterable[str] = (),
    caption_ids: Sequence[int] | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Processor inputs of the prompt followed by the caption, and the index j of the first token of k's mention.

    With ``caption_ids`` (the ids the model emitted after the prompt; ``caption`` is their decoded text,
    stripped), the inputs are the prompt's followed by exactly those ids, and j is found in their decoded offsets:
    the sequence the model produced, whatever its first token ("The" after a chat template, "n" of "an"). Without
    them (a text a user gave), the text is ``prompt + caption`` exactly as given (no space is inserted) and j is
    found in its tokenizer offsets; the processor expands only the image placeholder, so the tokens from c to the
    end are the tokenizer's own. The token at j is c; the logit that predicts it sits at position j − 1. Raises
    ValueError if the caption does not mention k.
    """
    span = mention_span(caption, name, synonyms)
    if span is None:
        raise ValueError(f"caption does not mention {name!r}: {caption!r}")
    tokenizer = loaded.processor.tokenizer
    if caption_ids is not None:
        decoded = tokenizer.decode(list(caption_ids), skip_special_tokens=True)
        if decoded.strip() != caption:
            raise ValueError(f"caption {caption!r} is not the text of its ids ({decoded.strip()!r})")
        start = len(decoded) - len(decoded.lstrip()) + span[0]
        i = next(i for i, end in enumerate(token_ends(tokenizer, caption_ids)) if end > start)
        (prompt_part,) = image_inputs(loaded, [image], prompt)
        inputs = extended(loaded, prompt_part, [Continuation(torch.as_tensor(list(caption_ids)), 0)])
        return inputs, int(prompt_part["input_ids"].shape[1]) + i
    text = prompt + caption
    start = len(prompt) + span[0]
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    j = next(i for i, (a, b) in enumerate(offsets) if b > start and b > a)
    inputs = image_inputs(loaded, [image], text)[0]
    full = inputs["input_ids"][0].tolist()
    j_full = len(full) - (len(ids) - j)
    if j_full < 1 or full[j_full:] != list(ids[j:]):
        raise ModelError(f"{loaded.path}: cannot align tokenizer offsets with processor input ids for {text!r}")
    return inputs, j_full


def unit_logits(loaded: LoadedModel, token_id: int) -> np.ndarray:
    """D[:, c] = W_down_l^T W_U[c] for every layer: (L, d_ff), unit i's direct effect on token c's logit."""
    w_u = weight_of(loaded.model.get_output_embeddings())[token_id].float()
    rows = []
    for layer in loaded.model.get_decoder().layers:
        down = getattr(layer.mlp, "down_proj", None)
        if down is None:
            raise ModelError(f"{loaded.path}: decoder MLP has no `down_proj`; Pan's score needs the FFN output weight")
        weight = weight_of(down).float()  # on its layer's device (a sharded model's layers differ)
        rows.append((weight.T @ w_u.to(weight.device)).cpu())
    return torch.stack(rows).detach().numpy()


@dataclass(frozen=True)
class Target:
    """Where one sample's target token is read: ``inputs``, processor inputs (one row) of the prompt and the caption
    before k's first token c, whose last position predicts c; ``token_id`` (c), ``position`` (of that logit in the
    full sequence) and the image's token ``layout``."""

    inputs: dict[str, torch.Tensor]
    token_id: int
    position: int
    layout: TokenLayout


def target_prefix(
    loaded: LoadedModel,
    image: np.ndarray,
    prompt: str,
    caption: str,
    name: str,
    synonyms: Iterable[str] = (),
    caption_ids: Sequence[int] | None = None,
) -> Target:
    """The teacher-forced prefix before k's first caption token (``target_position``: the emitted ``caption_ids``
    where given), with c, the position that predicts it and the token layout."""
    inputs, j = target_position(loaded, image, prompt, caption, name, synonyms, caption_ids)
    token_id = int(inputs["input_ids"][0, j])
    layout = token_layout(loaded, inputs, image.shape[:2])
    prefix = {k: v[:, :j] if k in loaded.family.token_keys else v for k, v in inputs.items()}
    return Target(prefix, token_id, j - 1, layout)


def gradcam(
    loaded: LoadedModel,
    image: np.ndarray,
    prompt: str,
    caption: str,
    name: str,
    synonyms: Iterable[str] = (),
    caption_ids: Sequence[int] | None = None,
) -> GradCam:
    """g = O' ⊙ ∂y_c/∂O' on the original image, y_c the logit of k's first caption token at the position
    that predicts it (teacher-forced prompt + caption prefix: the emitted ``caption_ids`` where given,
    ``target_position``). No parameter gradient is computed."""
    return gradcam_at(loaded, target_prefix(loaded, image, prompt, caption, name, synonyms, caption_ids))


def gradcam_at(loaded: LoadedModel, target: Target) -> GradCam:
    """``gradcam`` at a target already found (``target_prefix``): what a caller that also integrates gradients on
    the same prefix computes once."""
    inputs, token_id = target.inputs, target.token_id
    mask = loaded.image_positions(inputs["input_ids"])
    with torch.enable_grad(), capture_image_activations(loaded.act_fns, mask, gradients=True) as rec:
        loaded.model(**inputs, position_ids=loaded.positions(inputs)).logits[0, -1, token_id].backward()
    o = rec.activations_per_image()[0].float()
    grad = rec.gradients_per_image()[0].float()
    return GradCam(
        gradcam=(o * grad).cpu().numpy(),
        activations=o.cpu().numpy(),
        token_id=token_id,
        token=loaded.processor.tokenizer.convert_ids_to_tokens(token_id),
        position=target.position,
        unit_logit=unit_logits(loaded, token_id),
        layout=target.layout,
    )
