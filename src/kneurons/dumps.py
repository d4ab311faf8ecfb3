"""What the model computes for the method: image-position activations O' and GradCAM g for one target token."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kneurons.captions import mention_span
from kneurons.errors import ModelError
from kneurons.generation import prompt_inputs
from kneurons.hooks import capture_image_activations
from kneurons.models import LoadedModel


@torch.inference_mode()
def image_activations(loaded: LoadedModel, images: Sequence[np.ndarray], prompt: str) -> np.ndarray:
    """O' for each image: (N, L, P, d_ff) float32, from one forward pass of the prompt.

    Image tokens precede the text in a causal decoder, so O' does not depend on any caption that follows.
    """
    inputs = prompt_inputs(loaded, images, prompt)
    with capture_image_activations(loaded.act_fns, loaded.image_positions(inputs["input_ids"])) as rec:
        loaded.model(**inputs)
    return rec.stacked_activations().float().cpu().numpy()


@dataclass
class GradCam:
    """GradCAM of one sample: g and O' (L, P, d_ff), the target token c and the position that predicts it,
    and D[:, c] (L, d_ff), each unit's direct contribution to c's logit (for Pan's score)."""

    gradcam: np.ndarray
    activations: np.ndarray
    token_id: int
    token: str
    position: int
    unit_logit: np.ndarray


def target_position(
    loaded: LoadedModel, image: np.ndarray, prompt: str, caption: str, name: str, synonyms: Iterable[str] = ()
) -> tuple[dict[str, torch.Tensor], int]:
    """Processor inputs of ``prompt + " " + caption`` and the index j of the first token of k's mention in them.

    The token at j is c; the logit that predicts it sits at position j − 1. Raises ValueError if the caption
    does not mention k.
    """
    span = mention_span(caption, name, synonyms)
    if span is None:
        raise ValueError(f"caption does not mention {name!r}: {caption!r}")
    text = f"{prompt} {caption}"
    start = len(prompt) + 1 + span[0]
    enc = loaded.processor.tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    j = next(i for i, (a, b) in enumerate(offsets) if b > start and b > a)
    inputs = prompt_inputs(loaded, [image], text)
    full = inputs["input_ids"][0]
    j_full = j + int((full == loaded.image_token_id).sum()) - sum(t == loaded.image_token_id for t in ids)
    if int(full[j_full]) != ids[j]:
        raise ModelError(f"{loaded.path}: cannot align tokenizer offsets with processor input ids for {text!r}")
    return inputs, j_full


def unit_logits(loaded: LoadedModel, token_id: int) -> np.ndarray:
    """D[:, c] = W_down_l^T W_U[c] for every layer: (L, d_ff), unit i's direct effect on token c's logit."""
    w_u = loaded.model.get_output_embeddings().weight[token_id].float()
    rows = []
    for layer in loaded.model.get_decoder().layers:
        down = getattr(layer.mlp, "down_proj", None)
        if down is None:
            raise ModelError(f"{loaded.path}: decoder MLP has no `down_proj`; Pan's score needs the FFN output weight")
        rows.append(down.weight.float().T @ w_u)
    return torch.stack(rows).detach().cpu().numpy()


def gradcam(
    loaded: LoadedModel, image: np.ndarray, prompt: str, caption: str, name: str, synonyms: Iterable[str] = ()
) -> GradCam:
    """g = O' ⊙ ∂y_c/∂O' on the original image, y_c the logit of k's first caption token at the position
    that predicts it (teacher-forced prompt + caption prefix). No parameter gradient is computed."""
    inputs, j = target_position(loaded, image, prompt, caption, name, synonyms)
    token_id = int(inputs["input_ids"][0, j])
    inputs = {**inputs, "input_ids": inputs["input_ids"][:, :j], "attention_mask": inputs["attention_mask"][:, :j]}
    mask = loaded.image_positions(inputs["input_ids"])
    with torch.enable_grad(), capture_image_activations(loaded.act_fns, mask, gradients=True) as rec:
        loaded.model(**inputs).logits[0, -1, token_id].backward()
    o = rec.stacked_activations()[0].float()
    grad = rec.stacked_gradients()[0].float()
    return GradCam(
        gradcam=(o * grad).cpu().numpy(),
        activations=o.cpu().numpy(),
        token_id=token_id,
        token=loaded.processor.tokenizer.convert_ids_to_tokens(token_id),
        position=j - 1,
        unit_logit=unit_logits(loaded, token_id),
    )
