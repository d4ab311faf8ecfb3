"""The rules of rules/editing.smk: the split the edits are judged on, each target's knowledge-level sets and their
controls, the edited model's captions on the split (one model load per target, every edit applied in place and
undone), and the editing tables and figure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kneurons.captions import mentions
from kneurons.coco import read_record, records_by_id
from kneurons.editsets import (
    DISCOVERY,
    HELDOUT,
    LOCALITY,
    SplitRow,
    draws_of,
    in_any_set,
    knowledge_controls,
    knowledge_set,
    split,
)
from kneurons.errors import DataError
from kneurons.h5io import read_dump
from kneurons.io import atomic_path, per_image_files, read_tsv_rows, write_json, write_tsv_rows
from kneurons.jobs import console
from kneurons.names import CONTROL, NONE
from kneurons.neuronsets import read_sets
from kneurons.protocol import Captioning, Editing
from kneurons.samples import read_tsv, sample_images

if TYPE_CHECKING:
    from kneurons.models import LoadedModel

HOOK = "ablate_hook"  # the zero-ablation of a set at the image positions in the prompt pass (rule perturb's)
SPLIT_COLUMNS = [f.name for f in fields(SplitRow)]


def edit_split(
    captioned_tsvs: Sequence[str], selected_tsv: str, editing: Editing, synonyms: Mapping, out_tsv: str
) -> None:
    """Rule edit_split: every target's discovery, held-out and locality images (kneurons.editsets.split), from the
    captioned candidates of every target, never an image of D as held-out or locality."""
    captioned: dict[str, list] = {}
    for path in captioned_tsvs:
        for r in read_tsv(path):
            captioned.setdefault(r.knowledge, []).append(r)
    d = sample_images(selected_tsv)
    in_d = {r.image_id for r in d}
    rows = []
    for k in sorted({r.knowledge for r in d}):
        mine = [r for r in d if r.knowledge == k]
        rows += split(k, mine, captioned, in_d, editing.heldout, editing.locality, editing.seed, synonyms)
    leaked = [r for r in rows if r.role in (HELDOUT, LOCALITY) and r.image_id in in_d]
    if leaked:
        raise DataError(f"{out_tsv}: image {leaked[0].image_id} of D would be judged as {leaked[0].role}")
    write_tsv_rows(out_tsv, (r.row() for r in rows), SPLIT_COLUMNS)


def read_split(split_tsv: str, knowledge: str) -> list[SplitRow]:
    """The rows of ``knowledge`` in a split file (rule edit_split's)."""
    return [
        SplitRow(**{**r, "image_id": int(r["image_id"])})
        for r in read_tsv_rows(split_tsv)
        if r["knowledge"] == knowledge
    ]


def edit_sets(
    knowledge: str, set_dirs: Mapping[str, str], gradcam_dir: str, editing: Editing, out: Mapping[str, str]
) -> None:
    """Rule edit_sets: each method's knowledge-level set of ``knowledge`` from its per-sample sets (``set_dirs``:
    method -> directory) and its random controls, drawn from the units in no per-sample set of any method;
    ``out``: set kind -> JSON file (a method's and its control's)."""
    sets = {m: list(read_sets(d)) for m, d in set_dirs.items()}
    dumps = per_image_files(gradcam_dir, ".h5")
    if not dumps:
        raise DataError(f"{gradcam_dir}: no GradCAM dump to read the model's shape from")
    shape = read_dump(dumps[0], ["g_max"])[0]["g_max"].shape
    exclude = in_any_set([s for found in sets.values() for s in found], shape)
    for method, found in sets.items():
        shared = knowledge_set(method, knowledge, found, editing.share, editing.budget)
        write_json(out[method], shared)
        write_json(out[method + CONTROL], knowledge_controls(shared, exclude, editing.control_draws))


def _image_line(caption: str, logp: float | None, row: SplitRow, k: str, k2: str, syn: Mapping, **fields) -> dict:
    objects = [o for o in row.objects.split(",") if o]
    return (
        {"knowledge": k}
        | fields
        | {
            "image_id": row.image_id,
            "role": row.role,
            "caption": caption,
            "names_target": mentions(caption, k, syn.get(k, ())),
            "names_rewrite": bool(k2) and mentions(caption, k2, syn.get(k2, ())),
            "named": [o for o in objects if mentions(caption, o, syn.get(o, ()))],
            "logp": logp,
        }
    )


def edit_eval(
    loaded: LoadedModel,
    data: Mapping[str, str],
    knowledge: str,
    rewrite_to: str,
    set_files: Mapping[str, str],
    editing: Editing,
    captioning: Captioning,
    out_jsonl: str,
) -> None:
    """Rule edit_eval: ``knowledge``'s split images (``data["split"]``) captioned by the unedited model and with
    each knowledge-level set of ``set_files`` (kind -> file; every draw of a control) edited in the weights by every
    (operation, strength) of ``editing`` (rewrite towards ``rewrite_to``), and zero-ablated by a hook at the image
    positions in the prompt pass (rule perturb's ablation) for comparison; each caption with the log p of k's first
    token in its clean caption (k's images) or of its first named object's (locality images), and the mean log p
    of every split caption's tokens with no image. One JSON line per caption or text."""
    from kneurons.edit import Edit, edited
    from kneurons.generation import image_inputs, scored_parts
    from kneurons.logprob import continuations, text_logprobs
    from kneurons.perturb import ablated_captions, layer_units

    rows = read_split(data["split"], knowledge)
    records = records_by_id(data["annotations"], data["images"])
    pixels = [read_record(records[r.image_id]) for r in rows]
    syn = dict(captioning.synonyms)
    scored_name = [
        knowledge
        if r.role != LOCALITY
        else next(o for o in r.objects.split(",") if mentions(r.caption, o, syn.get(o, ())))
        for r in rows
    ]
    ids = [[int(t) for t in r.caption_ids.split()] for r in rows]
    conts = continuations(loaded, pixels, captioning.prompt, [r.caption for r in rows], scored_name, syn, ids)
    texts = [ids[j] for j, r in enumerate(rows) if r.role != DISCOVERY]
    text_rows = [r for r in rows if r.role != DISCOVERY]

    judged = [j for j, r in enumerate(rows) if r.role != DISCOVERY]  # what a control is captioned on

    def caption_lines(
        scored: Sequence[tuple[str, float | None]], chosen: Sequence[int] = range(len(rows)), **fields: object
    ) -> list[str]:
        return [
            json.dumps(_image_line(c, lp, rows[j], knowledge, rewrite_to, syn, **fields)) + "\n"
            for (c, lp), j in zip(scored, chosen, strict=True)
        ]

    def text_lines(**fields: object) -> list[str]:
        return [
            json.dumps({"knowledge": knowledge} | fields | {"image_id": r.image_id, "role": "text", "text_logp": v})
            + "\n"
            for r, v in zip(text_rows, text_logprobs(loaded, texts), strict=True)
        ]

    parts = image_inputs(loaded, pixels, captioning.prompt)  # through the processor once, captioned many times

    def captions(chosen: Sequence[int]) -> list[tuple[str, float | None]]:
        chosen_parts, scored = [parts[j] for j in chosen], [conts[j] for j in chosen]
        return scored_parts(loaded, chosen_parts, scored, **captioning.generation)

    edits = editing.edits()
    if not rewrite_to and any(op == "rewrite" for op, _ in edits):
        edits = [(op, strength) for op, strength in edits if op != "rewrite"]
        console(f"{knowledge}: no other target to rewrite it towards (editing.rewrite_to); its rewrite is left out")
    unedited = {"method": NONE, "draw": 0, "set_size": 0, "op": NONE, "strength": 0.0}
    everything = range(len(rows))
    out = caption_lines(captions(everything), **unedited) + text_lines(**unedited)
    hooked: list[tuple[dict, list[np.ndarray]]] = []  # every (set, draw): zero-ablated by the hook, batched together
    for kind, path in set_files.items():
        nset = json.loads(Path(path).read_text())
        for draw, units in enumerate(draws_of(nset)):
            at = {"method": kind, "draw": draw, "set_size": len(units)}
            if not units:
                out.append(json.dumps({"knowledge": knowledge} | at | {"empty": True}) + "\n")
                continue
            # a control's generality gap says nothing: its captions on the discovery images are left out
            chosen = judged if kind.endswith(CONTROL) else everything
            for op, strength in edits:
                edit = Edit(op, strength, knowledge, rewrite_to) if op == "rewrite" else Edit(op, strength)
                with edited(loaded, units, edit, where=path):
                    out += caption_lines(captions(chosen), chosen, **at, op=op, strength=strength)
                    out += text_lines(**at, op=op, strength=strength)
            hooked.append((at, chosen, layer_units(units, loaded.n_layers)))
    if hooked:
        sets = [units for _, _, units in hooked]
        ablated = ablated_captions(
            loaded, pixels, captioning.prompt, sets, continuations=conts, **captioning.generation
        )
        for (at, chosen, _), scored in zip(hooked, ablated, strict=True):
            out += caption_lines([scored[j] for j in chosen], chosen, **at, op=HOOK, strength=0.0)
    with atomic_path(out_jsonl) as tmp:
        tmp.write_text("".join(out))


def editing(eval_jsonls: Sequence[str], bert_model: str, bert_layers: int, out: Mapping[str, str]) -> None:
    """Rule editing: the editing table (``out["csv"]``, ``out["md"]``), the paired comparisons between methods
    (``out["pairwise_csv"]``, ``out["pairwise_md"]``) and the figure (``out["png"]``)."""
    from kneurons.editscores import editing_tables  # matplotlib and the text metrics: this rule's alone

    lines = [json.loads(ln) for path in eval_jsonls for ln in Path(path).read_text().splitlines() if ln.strip()]
    editing_tables(lines, bert_model, bert_layers, out)
