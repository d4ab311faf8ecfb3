"""Teacher-forced log-probabilities of an object's word in an image's clean caption, read in the prompt pass that
also starts the caption (kneurons.generation.generate_scored_batch): one pass, not two."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from kneurons.dumps import target_position
from kneurons.errors import ModelError
from kneurons.generation import Continuation, image_inputs
from kneurons.models import LoadedModel


def continuation(
    loaded: LoadedModel,
    prompt_ids: torch.Tensor,
    image: np.ndarray,
    prompt: str,
    caption: str,
    name: str,
    synonyms: Iterable[str] = (),
    caption_ids: Sequence[int] | None = None,
) -> Continuation:
    """The tokens of ``caption`` after the prompt whose processor ids are ``prompt_ids`` (T,): the ids the model
    emitted (``caption_ids``) where given, else the text as given (kneurons.dumps.target_position); with the index
    of the first token of the mention of ``name`` in them: log p of that token is read at the position that
    predicts it, the position GradCAM uses. ValueError if the caption does not mention ``name``; ModelError if the
    prompt's tokens change when the caption follows (no shared prompt pass)."""
    full, j = target_position(loaded, image, prompt, caption, name, synonyms, caption_ids)
    ids = full["input_ids"][0]
    n = int(prompt_ids.shape[0])
    if j < n or not torch.equal(ids[:n].cpu(), prompt_ids.cpu()):
        raise ModelError(
            f"{loaded.path}: the prompt {prompt!r} is tokenized differently when the caption {caption!r} follows; "
            "its log-probability cannot ride in the prompt pass"
        )
    return Continuation(ids=ids[n:].cpu(), index=j - n)


def continuations(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    captions: Sequence[str],
    names: Sequence[str],
    synonyms: Mapping[str, Sequence[str]],
    caption_ids: Sequence[Sequence[int] | None] | None = None,
) -> list[Continuation]:
    """The continuation of each image: its clean caption ``captions[i]`` (the ids the model emitted,
    ``caption_ids[i]``, where given), scored at the first token of the mention of its own object ``names[i]``
    (``synonyms`` by name)."""
    emitted = caption_ids if caption_ids is not None else [None] * len(captions)
    return [
        continuation(loaded, part["input_ids"][0], image, prompt, caption, name, synonyms.get(name, ()), ids)
        for part, image, caption, name, ids in zip(
            image_inputs(loaded, images, prompt), images, captions, names, emitted, strict=True
        )
    ]


@torch.inference_mode()
def text_logprobs(loaded: LoadedModel, texts: Sequence[Sequence[int]], batch_size: int = 64) -> list[float]:
    """The mean teacher-forced log p of each text's tokens with no image in the input: ``texts`` are token ids (a
    caption as the model emitted it), each read after the tokenizer's BOS token where it has one (else from its
    second token on). One float per text; what a text-only model would say of the words, edited or not."""
    bos = loaded.processor.tokenizer.bos_token_id
    rows = [([bos] if bos is not None else []) + [int(t) for t in ids] for ids in texts]
    if any(len(r) < 2 for r in rows):
        raise ModelError(f"{loaded.path}: a text of fewer than two tokens (with BOS) has nothing to score")
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(map(len, chunk))
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, r in enumerate(chunk):
            ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
        logits = loaded.model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(logits.device))[..., 0]
        valid = mask[:, 1:].to(logp.device).bool()
        out += ((logp * valid).sum(1) / valid.sum(1)).tolist()
    return out
