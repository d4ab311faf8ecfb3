"""Knowledge editing in the weights: a set of FFN units (layer, unit) erased, amplified or rewritten in each layer's
FFN output projection W_down (``mlp.down_proj.weight``, (d, d_ff)), as Dai et al. edit knowledge neurons.

Unit i of layer l is O[l, :, i], the act_fn output kneurons hooks everywhere else. W_down's column i is what that
unit writes into the residual stream, so scaling the column by α scales the unit's contribution at every position
and every decoding step (for a SwiGLU decoder, act_fn(gate)_i · up_i · α: the same as scaling O[l, :, i] by α).
An edit changes only the named columns and is undone exactly: ``edited`` keeps the original columns and copies them
back on exit, bit for bit, an exception included.

- erase: columns × α (α = 0 is Dai's erase; other α a dose);
- amplify: columns × β (β > 1);
- rewrite k → k': each column moved by λ · ‖column‖ · (E(k') − E(k)) / ‖E(k') − E(k)‖, E the output embedding
  (unembedding) rows of the two words' first tokens (Dai's update, its step scaled to each column's norm).

    python -m kneurons.edit --model DIR --set SET.json --op erase --strength 0 --out DIR2

writes an edited copy of a model directory that plain transformers (or ``kneurons.models.load_model``) loads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from kneurons.errors import DataError, KneuronsError
from kneurons.models import LoadedModel, load_model
from kneurons.perturb import checked_neurons
from kneurons.vocab import down_projections

OPS = ("erase", "amplify", "rewrite")


@dataclass(frozen=True)
class Edit:
    """One weight edit: ``op`` (erase, amplify, rewrite) at ``strength`` (α, β or λ); a rewrite moves the columns
    from the word ``source`` (k) towards the word ``target`` (k')."""

    op: str
    strength: float
    source: str = ""
    target: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise KneuronsError(f"edit: op {self.op!r} is not one of {', '.join(OPS)}")
        if self.op == "rewrite" and not (self.source and self.target):
            raise KneuronsError("edit: a rewrite needs the word it moves from (source=k) and to (target=k')")


def first_token(loaded: LoadedModel, word: str) -> int:
    """The id of ``word``'s first token as it follows a space in a caption (the tokenizer's own encoding)."""
    ids = loaded.processor.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise KneuronsError(f"edit: the tokenizer gives no token for {word!r}")
    return int(ids[0])


def rewrite_direction(loaded: LoadedModel, source: str, target: str) -> torch.Tensor:
    """(E(k') − E(k)) / ‖E(k') − E(k)‖, (d,) float32: the unit direction from k's first token's unembedding row to
    k''s."""
    head = loaded.model.get_output_embeddings().weight
    delta = (head[first_token(loaded, target)] - head[first_token(loaded, source)]).detach().float()
    norm = float(delta.norm())
    if norm == 0.0:
        raise KneuronsError(f"edit: {source!r} and {target!r} share their first token; nothing to rewrite towards")
    return delta / norm


def edited_columns(columns: torch.Tensor, edit: Edit, direction: torch.Tensor | None = None) -> torch.Tensor:
    """The new W_down columns (d, n) for the original ``columns`` (d, n): scaled by the strength (erase, amplify),
    or each moved by strength · its norm along ``direction`` (d,) (rewrite). Computed in float32, returned in the
    columns' dtype."""
    x = columns.float()
    if edit.op in ("erase", "amplify"):
        out = x * edit.strength
    else:
        if direction is None:
            raise KneuronsError("edit: a rewrite needs its direction (rewrite_direction)")
        out = x + edit.strength * x.norm(dim=0, keepdim=True) * direction.to(x.device)[:, None]
    return out.to(columns.dtype)


def checked_units(loaded: LoadedModel, units: Sequence[Sequence], where: str) -> dict[int, list[int]]:
    """``units`` ((layer, unit) pairs, or a set's [layer, unit, score] rows) grouped by layer, distinct and in
    order; KneuronsError naming ``where`` and the first unit outside the model (kneurons.perturb.checked_neurons)."""
    by_layer: dict[int, list[int]] = {}
    for layer, unit in checked_neurons(loaded, units, where):
        if unit not in by_layer.setdefault(layer, []):
            by_layer[layer].append(unit)
    return by_layer


@contextmanager
def edited(loaded: LoadedModel, units: Sequence[Sequence], edit: Edit, where: str = "edit") -> Iterator[None]:
    """Within the block, ``units``' W_down columns are edited in place (each on its layer's device); on exit the
    original columns are copied back, bit for bit, also when the block raises."""
    by_layer = checked_units(loaded, units, where)
    direction = rewrite_direction(loaded, edit.source, edit.target) if edit.op == "rewrite" else None
    down_projections(loaded)  # every layer has its mlp.down_proj, or one ModelError line
    weights = [layer.mlp.down_proj.weight for layer in loaded.model.get_decoder().layers]  # the parameters themselves
    saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for layer, cols in by_layer.items():
                weight = weights[layer]
                if weight.device.type == "meta":
                    raise KneuronsError(f"{where}: layer {layer}'s W_down is offloaded; edit a model loaded in memory")
                idx = torch.tensor(cols, device=weight.device)
                original = weight[:, idx].clone()
                saved.append((weight, idx, original))
                weight[:, idx] = edited_columns(original, edit, direction)
        yield
    finally:
        with torch.no_grad():
            for weight, idx, original in saved:
                weight[:, idx] = original


def save_edited(
    loaded: LoadedModel, out: str | os.PathLike, units: Sequence[Sequence], edit: Edit, where: str = "edit"
) -> Path:
    """A model directory at ``out`` that equals ``loaded``'s in every tensor but ``units``' W_down columns, edited
    by ``edit``, with the processor beside it; written to a temporary directory, then renamed (no partial output).
    The model in memory is left as it was."""
    out = Path(out)
    if out.exists():
        raise KneuronsError(f"{out}: exists; give a new directory for the edited model")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with edited(loaded, units, edit, where):
            loaded.model.save_pretrained(tmp)
        loaded.processor.save_pretrained(tmp)
        (tmp / "kneurons_edit.json").write_text(
            json.dumps({"from": str(loaded.path), "edit": vars(edit), "units": [list(u[:2]) for u in units]}, indent=1)
        )
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_units(path: str | os.PathLike) -> list[tuple[int, int]]:
    """The units of a set file (``{"neurons": [[layer, unit, score], ...]}``, any set kind kneurons writes)."""
    try:
        rows = json.loads(Path(path).read_text())["neurons"]
        return [(int(r[0]), int(r[1])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DataError(f"{path}: not a neuron set file with a 'neurons' list of [layer, unit, ...] ({e})") from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kneurons.edit", description="Write a weight-edited model directory.")
    ap.add_argument("--model", required=True, help="the model directory to edit (never a hub)")
    ap.add_argument("--set", required=True, help="a neuron set JSON file (results/neurons/.../*.json)")
    ap.add_argument("--op", required=True, choices=OPS)
    ap.add_argument("--strength", type=float, required=True, help="α (erase), β (amplify) or λ (rewrite)")
    ap.add_argument("--source", default="", help="rewrite: the word k the units move from")
    ap.add_argument("--target", default="", help="rewrite: the word k' they move towards")
    ap.add_argument("--dtype", default="float32", help="the dtype the model is loaded and saved in")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        edit = Edit(args.op, args.strength, args.source, args.target)
        units = read_units(args.set)
        loaded = load_model(args.model, dtype=args.dtype)
        out = save_edited(loaded, args.out, units, edit, where=args.set)
    except KneuronsError as e:
        print(f"kneurons.edit: {e}", file=sys.stderr)
        return 2
    print(f"{out}: {args.model} with {len(units)} units of {args.set} {args.op} at {args.strength:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
