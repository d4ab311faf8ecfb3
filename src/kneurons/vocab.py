"""Decoded neurons (paper Fig. 3/5): the tokens a neuron's output direction promotes, W_U · W_down[:, i]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kneurons.errors import ModelError
from kneurons.models import LoadedModel, weight_of


def down_projections(loaded: LoadedModel) -> list[torch.Tensor]:
    """Each decoder layer's FFN output matrix W_down (d, d_ff) (``mlp.down_proj.weight``), in layer order."""
    weights = []
    for i, layer in enumerate(loaded.model.get_decoder().layers):
        proj = getattr(getattr(layer, "mlp", None), "down_proj", None)
        if not isinstance(proj, nn.Linear):
            raise ModelError(f"{loaded.path}: decoder layer {i} has no `mlp.down_proj` linear layer")
        weights.append(weight_of(proj))
    return weights


@torch.no_grad()
def top_tokens(
    unembedding: torch.Tensor, down: Sequence[torch.Tensor], neurons: Sequence[tuple[int, int]], top: int
) -> list[list[int]]:
    """The ids of the ``top`` tokens with the largest logit W_U · W_down[l][:, i] for each neuron (l, i).

    ``unembedding`` W_U is (V, d), ``down[l]`` is (d, d_ff); neurons are decoded in one matrix product per layer.
    """
    out: list[list[int]] = [[] for _ in neurons]
    by_layer: dict[int, list[int]] = {}
    for j, (layer, _unit) in enumerate(neurons):
        by_layer.setdefault(layer, []).append(j)
    for layer, js in by_layer.items():
        units = torch.tensor([neurons[j][1] for j in js], device=down[layer].device)
        logits = unembedding.float() @ down[layer][:, units].float().to(unembedding.device)  # (V, n)
        ids = logits.topk(top, dim=0).indices.T.tolist()  # (n, top)
        for j, row in zip(js, ids, strict=True):
            out[j] = row
    return out


def decode_neurons(loaded: LoadedModel, neurons: Sequence[tuple[int, int]], top: int = 5) -> list[list[str]]:
    """The ``top`` tokens (as text, ``shown_token``) each neuron (layer, unit) promotes through the model's output
    embedding."""
    head = loaded.model.get_output_embeddings()
    if head is None:
        raise ModelError(f"{loaded.path}: the model has no output embedding (lm_head) to decode neurons with")
    ids = top_tokens(weight_of(head), down_projections(loaded), neurons, top)
    tokenizer = loaded.processor.tokenizer
    special = set(tokenizer.all_special_ids)  # shown as they are: "</s>", not a word "␣</s>"
    entries = [[tokenizer.convert_ids_to_tokens(t) for t in row] for row in ids]
    return [
        [e if t in special else shown_token(token_text(tokenizer, t), e) for t, e in zip(row, es, strict=True)]
        for row, es in zip(ids, entries, strict=True)
    ]


def token_text(tokenizer, token_id: int) -> str:
    """The text token ``token_id`` adds after other text, its leading space included: the tokenizer's own decode of
    the token twice, less the decode of it once. Decoding it alone would lose the space on SentencePiece
    tokenizers, which drop the leading space of a text's first token ("▁eye" decodes to "eye")."""
    once = tokenizer.decode([token_id])
    twice = tokenizer.decode([token_id, token_id])
    return twice[len(once) :] if twice.startswith(once) else once


def shown_token(text: str, token: str) -> str:
    """A decoded token as the tables show it, its word boundary kept: a leading space as "␣" ("␣eye", the start of
    a word, against "eye", a word's inside), other leading whitespace escaped ("\\tparent"); a token that decodes to
    nothing or to whitespace only as its vocabulary entry, quoted ('<0x0A>', 'Ċ')."""
    if not text.strip():
        return repr(token)
    body = text.lstrip()
    lead = text[: len(text) - len(body)]
    return "".join("␣" if c == " " else repr(c)[1:-1] for c in lead) + body.rstrip()
