"""The rules that run the model: captions, activation and GradCAM dumps, noisy captions, decoded neurons. One
function per rule: paths and parameters in, files out. Scripts only unpack ``snakemake``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kneurons.captions import mentions
from kneurons.coco import read_image, read_record
from kneurons.dumps import TokenLayout, gradcam, image_activations
from kneurons.dumpstats import activation_record, gradcam_record
from kneurons.errors import DataError
from kneurons.generation import Continuation, Scored, generate_captions, scored_captions
from kneurons.h5io import write_dump
from kneurons.io import atomic_path, per_image_files, write_text, write_tsv_rows
from kneurons.logprob import continuations
from kneurons.metrics import CEILING, FLOOR, ORIGINAL, markdown_table
from kneurons.models import LoadedModel
from kneurons.perturb import layer_units, perturbed_captions
from kneurons.protocol import Protocol
from kneurons.restore import every_unit, no_unit, restored_captions
from kneurons.samples import Candidate, read_tsv, write_tsv
from kneurons.selection import no_sample_note, records_by_id, sample_images, selected
from kneurons.vocab import decode_neurons


def caption_stage(
    loaded: LoadedModel, annotations: str, images: str, candidates_tsv: str, prompt: str, out_tsv: str, **gen
) -> None:
    """Rule caption_candidates: caption each candidate's original and inpainted image (batched); candidates
    already rejected (an unusable box) stay uncaptioned."""
    rows = read_tsv(candidates_tsv)
    todo = [r for r in rows if r.status != "rejected"]
    records = records_by_id(annotations, images)
    originals = [read_record(records[r.image_id]) for r in todo]
    inpainted = [read_image(r.inpainted) for r in todo]
    captions = generate_captions(loaded, originals + inpainted, prompt, **gen) if todo else []
    for i, r in enumerate(todo):
        r.caption, r.inpainted_caption = captions[i], captions[len(todo) + i]
    write_tsv(out_tsv, rows)


def _dump_attrs(loaded: LoadedModel, prompt: str, row: Candidate, layout: TokenLayout) -> dict:
    return {
        "model": str(loaded.path),
        "family": loaded.family.name,
        "prompt": prompt,
        "image_tokens": layout.n_tokens,
        "knowledge": row.knowledge,
        "image_id": row.image_id,
    }


def activations_stage(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    selected_tsv: str,
    prompt: str,
    out_dir: str,
    mode: str = "full",
    trace_share: float = 0.01,
) -> None:
    """Rule activations: ``{out_dir}/{image_id}.h5`` with the statistics of O' of the original and inpainted
    image, and (``mode`` full) both O' (L, P, d_ff) f16 or (compact) the traces of the strongest neurons, and the
    image's token layout (``token_positions`` (P,), ``token_regions`` (P, 4))."""
    records = records_by_id(annotations, images)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for row in selected(read_tsv(selected_tsv)):
            pixels = [read_record(records[row.image_id]), read_image(row.inpainted)]
            (original, layout), (inpainted, _) = image_activations(loaded, pixels, prompt)
            if original.shape != inpainted.shape:
                raise DataError(
                    f"{row.inpainted}: {inpainted.shape[1]} image tokens against the original image's "
                    f"{original.shape[1]}; the inpainted image must keep the original's size"
                )
            write_dump(
                tmp / f"{row.image_id}.h5",
                activation_record(original, inpainted, mode, trace_share) | layout.record(),
                _dump_attrs(loaded, prompt, row, layout) | {"mode": mode},
            )


def gradcam_stage(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    selected_tsv: str,
    prompt: str,
    synonyms: Sequence[str],
    out_dir: str,
    mode: str = "full",
) -> None:
    """Rule gradcam: ``{out_dir}/{image_id}.h5`` with max_p g and mean_p g (L, d_ff), D[:, c] (L, d_ff) for Pan's
    score and (``mode`` full) g (L, P, d_ff) f32."""
    records = records_by_id(annotations, images)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for row in selected(read_tsv(selected_tsv)):
            image = read_record(records[row.image_id])
            cam = gradcam(loaded, image, prompt, row.caption, row.knowledge, synonyms)
            attrs = _dump_attrs(loaded, prompt, row, cam.layout) | {
                "token": cam.token,
                "token_id": cam.token_id,
                "position": cam.position,
                "mode": mode,
            }
            record = gradcam_record(cam.gradcam, cam.unit_logit, mode) | cam.layout.record()
            write_dump(tmp / f"{row.image_id}.h5", record, attrs)


def _caption_line(
    scored: Scored, sample: Candidate, knowledge: str, synonyms: dict[str, list[str]], **fields: object
) -> dict:
    """One line of a perturbation file: ``fields`` (method, set, perturbation, level, seed, ...) and the caption of
    a sample's image with what it mentions: its own object, and k (the set's target); ``logp``, the teacher-forced
    log p of its own object's first token in its clean caption (None: not scored)."""
    caption, logp = scored
    return (
        {"knowledge": knowledge}
        | fields
        | {
            "image_id": sample.image_id,
            "image_knowledge": sample.knowledge,
            "caption": caption,
            "mentions": mentions(caption, sample.knowledge, synonyms.get(sample.knowledge, ())),
            "mentions_target": mentions(caption, knowledge, synonyms.get(knowledge, ())),
            "image_has_target": sample.knowledge == knowledge or knowledge in sample.others.split(","),
            "inpainted_caption": sample.inpainted_caption,
            "logp": logp,
        }
    )


@dataclass(frozen=True)
class Samples:
    """Samples with their original images and, when the protocol scores log p, each one's continuation (its
    clean caption, scored at its own object's first token)."""

    rows: list[Candidate]
    pixels: list[np.ndarray]
    continuations: list[Continuation] | None

    def of(self, knowledge: str) -> Samples:
        """The samples of one knowledge target, in this order."""
        keep = [j for j, r in enumerate(self.rows) if r.knowledge == knowledge]
        return Samples(
            [self.rows[j] for j in keep],
            [self.pixels[j] for j in keep],
            [self.continuations[j] for j in keep] if self.continuations is not None else None,
        )


def load_samples(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    selected_tsv: str,
    prompt: str,
    synonyms: dict[str, list[str]],
    protocol: Protocol,
) -> Samples:
    """D (every target's selected rows of ``selected_tsv``, in (knowledge, image id) order) with the original
    images and, when ``protocol`` scores log p, each sample's continuation."""
    rows = sample_images(selected_tsv)
    records = records_by_id(annotations, images)
    pixels = [read_record(records[r.image_id]) for r in rows]
    if not protocol.log_probability:
        return Samples(rows, pixels, None)
    captions, names = [r.caption for r in rows], [r.knowledge for r in rows]
    return Samples(rows, pixels, continuations(loaded, pixels, prompt, captions, names, synonyms))


def reference_stage(
    loaded: LoadedModel, d: Samples, prompt: str, synonyms: dict[str, list[str]], out_jsonl: str, **gen
) -> None:
    """Rule reference_captions: the no-perturbation reference, D's clean captions (and log p) once per run. One
    JSON line per (knowledge target k of D, sample of D), method "none", level "none": what Table II's scores
    are without any perturbation."""
    scored = scored_captions(loaded, d.pixels, prompt, d.continuations, **gen)
    with atomic_path(out_jsonl) as tmp, open(tmp, "w") as out:
        for k in sorted({r.knowledge for r in d.rows}):
            for r, sc in zip(d.rows, scored, strict=True):
                fields = {"method": "none", "set": 0, "set_size": 0, "perturbation": "none", "level": "none"}
                out.write(json.dumps(_caption_line(sc, r, k, synonyms, **fields, seed=0)) + "\n")


def _set_files(sets_dir: str) -> Iterator[tuple[dict, list[np.ndarray] | None]]:
    """Each neuron set of a set directory with its units by layer (None for an empty set)."""
    for path in per_image_files(sets_dir, ".json"):
        nset = json.loads(path.read_text())
        yield nset, layer_units(nset["neurons"], len(nset["layer_counts"])) if nset["neurons"] else None


def _empty_line(nset: dict) -> str:
    """The line of a set the thresholds left empty: recorded, nothing to perturb or patch."""
    empty = {"method": nset["method"], "knowledge": nset["knowledge"], "set": nset["image_id"]}
    return json.dumps(empty | {"set_size": 0, "empty": True}) + "\n"


def perturb_stage(
    loaded: LoadedModel,
    d: Samples,
    set_dirs: Mapping[str, str],
    scale_json: str,
    prompt: str,
    protocol: Protocol,
    synonyms: dict[str, list[str]],
    out_jsonls: Mapping[str, str],
    **gen,
) -> None:
    """Rule perturb (necessity): for each neuron set of each set kind in ``set_dirs`` (one target's), caption
    every sample of D (``d``) under each of the ``protocol``'s perturbations (noise levels in units of the
    reference scale in ``scale_json``, rule noise_scale; zero-ablation), with the log p of each sample's own
    object. One JSON line per (set, perturbation, sample) in ``out_jsonls[kind]``; an empty set gets one line
    {"set_size": 0, "empty": true} and no captions.
    """
    r = float(json.loads(Path(scale_json).read_text())["reference_scale"])
    conditions = protocol.perturbations()
    rows = [(c, j) for c in conditions for j in range(len(d.rows))]
    for kind, sets_dir in set_dirs.items():
        with atomic_path(out_jsonls[kind]) as tmp, open(tmp, "w") as out:
            for nset, units in _set_files(sets_dir):
                if units is None:
                    out.write(_empty_line(nset))
                    continue
                scored = perturbed_captions(
                    loaded, d.pixels, prompt, units, rows, r, continuations=d.continuations, **gen
                )
                for (c, j), sc in zip(rows, scored, strict=True):
                    fields = {
                        "method": nset["method"],
                        "set": nset["image_id"],
                        "set_size": nset["size"],
                        "perturbation": c.kind,
                        "level": c.label,
                        "noise_sd": c.level * r,
                        "seed": c.seed,
                    }
                    line = _caption_line(sc, d.rows[j], nset["knowledge"], synonyms, **fields)
                    out.write(json.dumps(line) + "\n")


def restore_stage(
    loaded: LoadedModel,
    d: Samples,
    set_dirs: Mapping[str, str],
    prompt: str,
    synonyms: dict[str, list[str]],
    out_jsonls: Mapping[str, str],
    bounds_jsonl: str,
    **gen,
) -> None:
    """Rule perturb (sufficiency): for every sample b of one target k (``d``: k's samples), caption b's inpainted
    image with each set of every kind in ``set_dirs`` patched to b's original values (kneurons.restore), one
    JSON line per (set, sample) in ``out_jsonls[kind]``; and, in ``bounds_jsonl``, b's ceiling (every unit
    patched), floor (nothing patched) and original image (unedited). Each line: the caption, whether it names
    k, and log p of k's first token in b's clean caption."""
    sets = {kind: list(_set_files(path)) for kind, path in set_dirs.items()}
    patched = [(kind, nset, units) for kind, found in sets.items() for nset, units in found if units is not None]
    bounds = [(CEILING, every_unit(loaded)), (FLOOR, no_unit(loaded))]
    lines: dict[str, list[str]] = {"": []}  # "": the bounds
    lines |= {kind: [_empty_line(n) for n, u in found if u is None] for kind, found in sets.items()}
    for j, b in enumerate(d.rows):
        unit_sets = [units for _, _, units in patched] + [units for _, units in bounds]
        scored, original = restored_captions(
            loaded,
            d.pixels[j],
            read_image(b.inpainted),
            prompt,
            unit_sets,
            d.continuations[j] if d.continuations else None,
            **gen,
        )
        named = [(kind, nset["image_id"], nset["size"]) for kind, nset, _ in patched]
        every = loaded.n_layers * loaded.d_ff
        named += [(CEILING, b.image_id, every), (FLOOR, b.image_id, 0), (ORIGINAL, b.image_id, 0)]
        for (kind, set_id, size), (caption, logp) in zip(named, [*scored, original], strict=True):
            line = {
                "knowledge": b.knowledge,
                "method": kind,
                "set": set_id,
                "set_size": size,
                "image_id": b.image_id,
                "caption": caption,
                "mentions_target": mentions(caption, b.knowledge, synonyms.get(b.knowledge, ())),
                "logp": logp,
            }
            lines[kind if kind in sets else ""].append(json.dumps(line) + "\n")
    for kind, path in [*out_jsonls.items(), ("", bounds_jsonl)]:
        write_text(path, "".join(lines[kind]))


DECODED_COLUMNS = ["method", "knowledge", "set", "rank", "layer", "unit", "score", "tokens"]


def decoded_neurons_stage(
    loaded: LoadedModel, set_dirs: Sequence[str], samples_tsv: str, top: int, out_csv: str, out_md: str
) -> None:
    """Rule decoded_neurons: the ``top`` tokens W_U · W_down[:, i] promotes for every neuron of every set (CSV);
    the Markdown shows each method's ``top`` highest-scored neurons of each target's first sample (or says why
    there is none: no sample in D, ``samples_tsv``'s reasons, or only empty sets). Each distinct neuron is decoded
    once, in one product per layer."""
    sets = [json.loads(path.read_text()) for d in set_dirs for path in per_image_files(d, ".json")]
    distinct = sorted({(layer, unit) for s in sets for layer, unit, _ in s["neurons"]})
    decoded = dict(zip(distinct, decode_neurons(loaded, distinct, top) if distinct else [], strict=True))
    rows = []
    for s in sets:
        rows += [
            {
                "method": s["method"],
                "knowledge": s["knowledge"],
                "set": s["image_id"],
                "rank": rank,
                "layer": layer,
                "unit": unit,
                "score": round(score, 6),
                "tokens": " ".join(decoded[(layer, unit)]),
            }
            for rank, (layer, unit, score) in enumerate(s["neurons"], 1)
        ]
    write_tsv_rows(out_csv, rows, DECODED_COLUMNS, delimiter=",")
    first_set = {}
    for r in rows:
        first_set.setdefault((r["method"], r["knowledge"]), r["set"])
    shown = [
        {**r, "neuron": f"L{r['layer']} #{r['unit']}"}
        for r in rows
        if r["set"] == first_set[(r["method"], r["knowledge"])] and r["rank"] <= top
    ]
    shown.sort(key=lambda r: (r["knowledge"], r["method"], r["rank"]))
    if shown:
        body = markdown_table(shown, ["knowledge", "method", "set", "rank", "neuron", "tokens"])
    elif sets:
        body = (
            f"Every one of the {len(sets)} neuron sets is empty (no neuron over the thresholds): nothing to decode.\n"
        )
    else:
        body = no_sample_note(samples_tsv) + "\n"
    write_text(
        out_md, f"Decoded neurons: the top-{top} tokens of W_U · W_down[:, i] (first sample of each target)\n\n" + body
    )
