"""The rules that run the model: captions, activation and GradCAM dumps, noisy captions, decoded neurons. One
function per rule: paths and parameters in, files out. Scripts only unpack ``snakemake``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

from kneurons.captions import mentions
from kneurons.coco import read_image, read_record
from kneurons.dumps import TokenLayout, gradcam, image_activations
from kneurons.dumpstats import activation_record, gradcam_record
from kneurons.errors import DataError
from kneurons.generation import generate_captions
from kneurons.h5io import write_dump
from kneurons.io import atomic_path, per_image_files, write_text, write_tsv_rows
from kneurons.metrics import markdown_table
from kneurons.models import LoadedModel
from kneurons.perturb import layer_units, perturbations, perturbed_captions
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
    caption: str, sample: Candidate, knowledge: str, synonyms: dict[str, list[str]], **fields: object
) -> dict:
    """One line of a perturbation file: ``fields`` (method, set, perturbation, level, seed, ...) and the caption of
    a sample's image with what it mentions: its own object, and k (the set's target)."""
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
        }
    )


def _sample_pixels(annotations: str, images: str, selected_tsv: str) -> tuple[list[Candidate], list, dict[int, int]]:
    """D's samples, the pixels of its distinct images (in image-id order) and each image id's index among them."""
    d = sample_images(selected_tsv)
    records = records_by_id(annotations, images)
    ids = sorted({r.image_id for r in d})
    return d, [read_record(records[i]) for i in ids], {image_id: j for j, image_id in enumerate(ids)}


def reference_stage(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    selected_tsv: str,
    prompt: str,
    synonyms: dict[str, list[str]],
    out_jsonl: str,
    **gen,
) -> None:
    """Rule reference_captions: the no-perturbation reference, D's clean captions once per run. One JSON line per
    (knowledge target k of D, image of D), method "none", level "none": what Table II's S_se and S_re are without
    any perturbation."""
    d, pixels, column = _sample_pixels(annotations, images, selected_tsv)
    captions = generate_captions(loaded, pixels, prompt, **gen)
    with atomic_path(out_jsonl) as tmp, open(tmp, "w") as out:
        for k in sorted({r.knowledge for r in d}):
            for r in d:
                fields = {"method": "none", "set": 0, "set_size": 0, "perturbation": "none", "level": "none"}
                line = _caption_line(captions[column[r.image_id]], r, k, synonyms, **fields, seed=0)
                out.write(json.dumps(line) + "\n")


def perturb_stage(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    selected_tsv: str,
    sets_dir: str,
    scale_json: str,
    prompt: str,
    levels: Sequence[float],
    seeds: int,
    ablation: bool,
    synonyms: dict[str, list[str]],
    out_jsonl: str,
    **gen,
) -> None:
    """Rule perturb: for each neuron set of one (method, k), caption every image of D under noise at every
    (level, seed), levels in units of the reference scale in ``scale_json`` (rule noise_scale), and, if
    ``ablation``, once with the set zero-ablated. One JSON line per (set, perturbation, image); an empty set gets
    one line {"set_size": 0, "empty": true} and no captions.
    """
    d, pixels, column = _sample_pixels(annotations, images, selected_tsv)
    r = float(json.loads(Path(scale_json).read_text())["reference_scale"])
    conditions = perturbations(levels, seeds, ablation)
    rows = [(c, j) for c in conditions for j in range(len(pixels))]
    with atomic_path(out_jsonl) as tmp, open(tmp, "w") as out:
        for path in per_image_files(sets_dir, ".json"):
            nset = json.loads(path.read_text())
            if not nset["neurons"]:  # thresholds chose no neuron: recorded, nothing to perturb
                empty = {"method": nset["method"], "knowledge": nset["knowledge"], "set": nset["image_id"]}
                out.write(json.dumps(empty | {"set_size": 0, "empty": True}) + "\n")
                continue
            units = layer_units(nset["neurons"], len(nset["layer_counts"]))
            captions = perturbed_captions(loaded, pixels, prompt, units, rows, r, **gen)
            by_row = dict(zip(rows, captions, strict=True))
            for c, sample in itertools.product(conditions, d):
                fields = {
                    "method": nset["method"],
                    "set": nset["image_id"],
                    "set_size": nset["size"],
                    "perturbation": c.kind,
                    "level": c.label,
                    "noise_sd": c.level * r,
                    "seed": c.seed,
                }
                caption = by_row[(c, column[sample.image_id])]
                out.write(json.dumps(_caption_line(caption, sample, nset["knowledge"], synonyms, **fields)) + "\n")


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
