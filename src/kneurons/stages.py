"""One function per workflow rule: paths and parameters in, files out. Scripts only unpack ``snakemake``."""

from __future__ import annotations

import itertools
import json
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kneurons.captions import mentions
from kneurons.coco import ImageRecord, image_records, load_coco, read_image
from kneurons.dumps import gradcam, image_activations
from kneurons.dumpstats import activation_record, gradcam_record
from kneurons.generation import generate_captions
from kneurons.h5io import read_dump, write_dump
from kneurons.io import atomic_path, read_tsv_rows, write_json, write_tsv_rows
from kneurons.metrics import markdown_table, table2
from kneurons.models import LoadedModel
from kneurons.neurons import (
    NeuronSet,
    candidates,
    final_set,
    pan_scores,
    random_neurons,
    resolve_threshold,
    schwettmann_scores,
    top_neurons,
)
from kneurons.perturb import layer_units, perturbed_captions
from kneurons.samples import (
    Candidate,
    Knowledge,
    inpaint_candidates,
    read_tsv,
    reason_counts,
    resolve_knowledge,
    select_samples,
    write_tsv,
)
from kneurons.textmetrics import bertscore_model_path, table3

BASELINES = ("schwettmann", "pan", "random")


def write_knowledge(annotations: str, spec: str | list[str], per_supercategory: int, out: str) -> list[Knowledge]:
    """Rule knowledge: resolve the knowledge targets against the COCO categories and list them (TSV)."""
    targets = resolve_knowledge(load_coco(annotations), spec, annotations, per_supercategory)
    write_tsv_rows(out, (asdict(t) for t in targets), ["name", "slug", "supercategory", "images"])
    return targets


def read_knowledge(path: str | os.PathLike) -> list[Knowledge]:
    """The targets listed by rule knowledge."""
    return [Knowledge(**{**r, "images": int(r["images"])}) for r in read_tsv_rows(path)]


def records_by_id(annotations: str, images: str) -> dict[int, ImageRecord]:
    """The images of a COCO split by id."""
    return {r.id: r for r in image_records(load_coco(annotations), images)}


def inpaint_stage(annotations: str, images: str, name: str, out_tsv: str, out_dir: str, **options) -> None:
    """Rule inpaint: inpaint k out of its candidate images; list them with their other objects."""
    records = image_records(load_coco(annotations), images)
    write_tsv(out_tsv, inpaint_candidates(records, name, out_dir, **options))


def caption_stage(
    loaded: LoadedModel, annotations: str, images: str, candidates_tsv: str, prompt: str, out_tsv: str, **gen
) -> None:
    """Rule caption_candidates: caption each candidate's original and inpainted image (batched)."""
    rows = read_tsv(candidates_tsv)
    records = records_by_id(annotations, images)
    originals = [read_image(records[r.image_id].path) for r in rows]
    inpainted = [read_image(r.inpainted) for r in rows]
    captions = generate_captions(loaded, originals + inpainted, prompt, **gen)
    for i, r in enumerate(rows):
        r.caption, r.inpainted_caption = captions[i], captions[len(rows) + i]
    write_tsv(out_tsv, rows)


def select_stage(captioned_tsv: str, n: int, synonyms: Sequence[str], out_tsv: str) -> dict[str, int]:
    """Rule select_samples: judge the three constraints and keep the first ``n`` passing candidates.

    Returns how many candidates ended with each reason (the selected ones under "selected").
    """
    judged = select_samples(read_tsv(captioned_tsv), n, synonyms)
    write_tsv(out_tsv, judged)
    return reason_counts(judged)


def selected(rows: Sequence[Candidate]) -> list[Candidate]:
    """The rows of D."""
    return [r for r in rows if r.status == "selected"]


def sample_table(selected_tsvs: Sequence[str], out_tsv: str) -> None:
    """Rule sample_table: every target's candidates, selected or with the reason they were not, in one TSV."""
    write_tsv(out_tsv, [r for p in selected_tsvs for r in read_tsv(p)])


def _dump_attrs(loaded: LoadedModel, prompt: str, row: Candidate) -> dict:
    return {
        "model": str(loaded.path),
        "prompt": prompt,
        "grid": list(loaded.grid),
        "image_tokens": loaded.n_image_tokens,
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
    image, and (``mode`` full) both O' (L, P, d_ff) f16 or (compact) the traces of the strongest neurons."""
    records = records_by_id(annotations, images)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for row in selected(read_tsv(selected_tsv)):
            pair = image_activations(
                loaded, [read_image(records[row.image_id].path), read_image(row.inpainted)], prompt
            )
            write_dump(
                tmp / f"{row.image_id}.h5",
                activation_record(pair[0], pair[1], mode, trace_share),
                _dump_attrs(loaded, prompt, row) | {"mode": mode},
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
            image = read_image(records[row.image_id].path)
            cam = gradcam(loaded, image, prompt, row.caption, row.knowledge, synonyms)
            attrs = _dump_attrs(loaded, prompt, row) | {
                "token": cam.token,
                "token_id": cam.token_id,
                "position": cam.position,
                "mode": mode,
            }
            write_dump(tmp / f"{row.image_id}.h5", gradcam_record(cam.gradcam, cam.unit_logit, mode), attrs)


def ours_stage(
    activations_dir: str, gradcam_dir: str, thresholds: dict, exclude_last_layer: bool, out_dir: str
) -> None:
    """Rule neurons_ours: C^k (stage 1) and N_k (stage 2) per sample, with the threshold values actually used.

    ``thresholds``: {"activation": number or "q<quantile>", "gradcam": number or "q<quantile>"}. A quantile of
    the activation threshold is taken over all neurons' max_p V; of the GradCAM threshold over the candidates'
    max_p g, floored at 0 (a negative GradCAM never marks a neuron that raises y_c).
    """
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for path in sorted(Path(activations_dir).glob("*.h5"), key=lambda p: int(p.stem)):
            acts, attrs = read_dump(path, ["v_max"])
            vmax = acts["v_max"]  # (L, d_ff) = max_p V
            gmax = read_dump(Path(gradcam_dir) / path.name, ["g_max"])[0]["g_max"]  # (L, d_ff) = max_p g
            n_layers = vmax.shape[0]
            exclude = (n_layers - 1,) if exclude_last_layer else ()
            eligible = np.ones(n_layers, bool)
            eligible[list(exclude)] = False
            t_a = resolve_threshold(thresholds["activation"], vmax[eligible])
            # the per-neuron maxima as one-position V and g: the filters' max over positions gives them back
            cand = candidates(vmax[:, None, :], t_a, exclude)
            t_g = resolve_threshold(thresholds["gradcam"], gmax[cand])
            if isinstance(thresholds["gradcam"], str):
                t_g = max(t_g, 0.0)
            final = final_set(cand, gmax[:, None, :], t_g)
            chosen = NeuronSet.from_mask(final, gmax)
            write_json(
                tmp / f"{path.stem}.json",
                {
                    "method": "ours",
                    "knowledge": str(attrs["knowledge"]),
                    "image_id": int(attrs["image_id"]),
                    "thresholds": {
                        "activation": thresholds["activation"],
                        "activation_value": t_a,
                        "gradcam": thresholds["gradcam"],
                        "gradcam_value": t_g,
                    },
                    "excluded_layers": list(exclude),
                    "candidates": int(cand.sum()),
                    "candidate_layer_counts": cand.sum(axis=1).tolist(),
                    "size": len(chosen),
                    "layer_counts": chosen.layer_counts(n_layers),
                    "score": "max_p GradCAM",
                    "neurons": chosen.neurons,
                },
            )


def baseline_stage(method: str, ours_dir: str, activations_dir: str, gradcam_dir: str, out_dir: str) -> None:
    """Rule neurons_baseline: Schwettmann's or Pan's top-|N_k| neurons for each sample, or the random control:
    N_k's per-layer counts drawn uniformly (seeded by knowledge and image id)."""
    if method not in BASELINES:
        raise ValueError(f"baseline method must be one of {BASELINES}, got {method!r}")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for path in sorted(Path(ours_dir).glob("*.json"), key=lambda p: int(p.stem)):
            ours = json.loads(path.read_text())
            cam, _ = read_dump(Path(gradcam_dir) / f"{path.stem}.h5", ["g_mean", "unit_logit"])
            # per-neuron means (L, d_ff) as one-position arrays: the scores' mean over positions gives them back
            if method == "schwettmann":
                scores, desc = schwettmann_scores(cam["g_mean"][:, None, :]), "mean_p GradCAM"
                mask = top_neurons(scores, ours["size"])
            elif method == "pan":
                o_mean = read_dump(Path(activations_dir) / f"{path.stem}.h5", ["o_mean"])[0]["o_mean"]
                scores, desc = pan_scores(o_mean[:, None, :], cam["unit_logit"]), "mean_p O' * D[:, c]"
                mask = top_neurons(scores, ours["size"])
            else:
                seed = zlib.crc32(f"{ours['knowledge']}/{ours['image_id']}".encode())
                mask = random_neurons(ours["layer_counts"], cam["g_mean"].shape[-1], seed)
                scores, desc = np.zeros(mask.shape, np.float32), "none (random control, N_k's layer counts)"
            chosen = NeuronSet.from_mask(mask, scores)
            write_json(
                tmp / path.name,
                {
                    "method": method,
                    "knowledge": ours["knowledge"],
                    "image_id": ours["image_id"],
                    "size": len(chosen),
                    "size_from": "ours",
                    "layer_counts": chosen.layer_counts(len(ours["layer_counts"])),
                    "score": desc,
                    "neurons": chosen.neurons,
                },
            )


def neuron_summary(set_dirs: Sequence[str], out_tsv: str) -> None:
    """Rule neuron_summary: one row per (method, knowledge, sample): set size, candidates, thresholds, layers."""
    cols = [
        "method",
        "knowledge",
        "image_id",
        "size",
        "candidates",
        "activation_threshold",
        "gradcam_threshold",
        "layer_counts",
    ]
    rows = []
    for d in set_dirs:
        for path in sorted(Path(d).glob("*.json"), key=lambda p: int(p.stem)):
            s = json.loads(path.read_text())
            t = s.get("thresholds", {})
            rows.append(
                {
                    "method": s["method"],
                    "knowledge": s["knowledge"],
                    "image_id": s["image_id"],
                    "size": s["size"],
                    "candidates": s.get("candidates", ""),
                    "activation_threshold": t.get("activation_value", ""),
                    "gradcam_threshold": t.get("gradcam_value", ""),
                    "layer_counts": " ".join(map(str, s["layer_counts"])),
                }
            )
    write_tsv_rows(out_tsv, rows, cols)


def sample_images(selected_tsv: str) -> list[Candidate]:
    """D over all knowledge targets: the selected rows of the sample table, in (knowledge, image id) order."""
    return sorted(selected(read_tsv(selected_tsv)), key=lambda r: (r.knowledge, r.image_id))


def perturb_stage(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    selected_tsv: str,
    sets_dir: str,
    activations_dir: str,
    prompt: str,
    levels: Sequence[float],
    seeds: int,
    scale: str,
    synonyms: dict[str, list[str]],
    out_jsonl: str,
    **gen,
) -> None:
    """Rule perturb: for each neuron set of one (method, k), caption every image of D under noise at every
    (level, seed). ``scale`` "absolute" adds level · z; "relative" multiplies it per unit by the std over the image
    positions of that unit's O' on the set's own original image. One JSON line per (set, level, seed, image); an
    empty set gets one line {"set_size": 0, "empty": true} and no captions.
    """
    d = sample_images(selected_tsv)
    records = records_by_id(annotations, images)
    ids = sorted({r.image_id for r in d})
    pixels = [read_image(records[i].path) for i in ids]
    column = {image_id: j for j, image_id in enumerate(ids)}
    rows = [(float(level), seed, j) for level in levels for seed in range(seeds) for j in range(len(ids))]
    with atomic_path(out_jsonl) as tmp, open(tmp, "w") as out:
        for path in sorted(Path(sets_dir).glob("*.json"), key=lambda p: int(p.stem)):
            nset = json.loads(path.read_text())
            if not nset["neurons"]:  # thresholds chose no neuron: recorded, nothing to perturb
                empty = {"method": nset["method"], "knowledge": nset["knowledge"], "set": nset["image_id"]}
                out.write(json.dumps(empty | {"set_size": 0, "empty": True}) + "\n")
                continue
            units = layer_units(nset["neurons"], len(nset["layer_counts"]))
            scales = None
            if scale == "relative":
                spread = read_dump(Path(activations_dir) / f"{path.stem}.h5", ["o_std"])[0]["o_std"]  # (L, d_ff)
                scales = [spread[layer, u] for layer, u in enumerate(units)]
            captions = perturbed_captions(loaded, pixels, prompt, units, rows, scales, **gen)
            by_row = dict(zip(rows, captions, strict=True))
            k = nset["knowledge"]
            for (level, seed), r in itertools.product(itertools.product(levels, range(seeds)), d):
                caption = by_row[(float(level), seed, column[r.image_id])]
                line = {
                    "method": nset["method"],
                    "knowledge": k,
                    "set": nset["image_id"],
                    "set_size": nset["size"],
                    "level": level,
                    "seed": seed,
                    "image_id": r.image_id,
                    "image_knowledge": r.knowledge,
                    "caption": caption,
                    "mentions": mentions(caption, r.knowledge, synonyms.get(r.knowledge, ())),
                    "mentions_target": mentions(caption, k, synonyms.get(k, ())),
                    "image_has_target": r.knowledge == k or k in r.others.split(","),
                    "inpainted_caption": r.inpainted_caption,
                }
                out.write(json.dumps(line) + "\n")


def read_perturbations(perturb_jsonls: Sequence[str]) -> tuple[list[dict], Counter]:
    """The caption lines of the perturbation files (rule perturb), in file order, and the number of empty sets
    per (method, knowledge)."""
    lines = [json.loads(ln) for p in perturb_jsonls for ln in Path(p).read_text().splitlines()]
    empty = Counter((ln["method"], ln["knowledge"]) for ln in lines if ln.get("empty"))
    return [ln for ln in lines if not ln.get("empty")], empty


def coverage_notes(knowledge_tsv: str, samples_tsv: str, empty: Counter) -> dict[str, str]:
    """Why a knowledge target has fewer rows than the others: no sample passed the constraints (with the reason
    counts), or some of its neuron sets are empty. {knowledge: note}; targets with nothing to say are left out."""
    rows = read_tsv(samples_tsv)
    notes = {}
    for target in read_knowledge(knowledge_tsv):
        mine = [r for r in rows if r.knowledge == target.name]
        if not selected(mine):
            reasons = ", ".join(f"{why}: {n}" for why, n in sorted(reason_counts(mine).items())) or "no candidate image"
            notes[target.name] = f"no sample passed the constraints ({reasons})"
    for (method, k), n in sorted(empty.items()):
        notes[k] = "; ".join(filter(None, [notes.get(k), f"{method}: {n} empty set(s), no neuron over the thresholds"]))
    return notes


def _notes_md(notes: dict[str, str]) -> str:
    """The notes of coverage_notes as a Markdown list under a heading (nothing when there are none)."""
    return "\nNotes\n\n" + "".join(f"- {k}: {note}\n" for k, note in notes.items()) if notes else ""


TABLE2_COLUMNS = (
    ["method", "knowledge", "level", "sets", "empty_sets"]
    + [f"{m}{suffix}" for m in ("S_se", "S_re", "S_mean", "S_hal") for suffix in ("", "_lo", "_hi")]
    + ["note"]
)


def table2_stage(
    perturb_jsonls: Sequence[str], knowledge_tsv: str, samples_tsv: str, out_csv: str, out_md: str
) -> None:
    """Rule table2: Table II as CSV (every row) and Markdown (the per-method summary rows and per-level rows).

    Every method gets a row (sets 0, metrics nan, with a note) for a target with no sample or only empty sets.
    """
    lines, empty = read_perturbations(perturb_jsonls)
    notes = coverage_notes(knowledge_tsv, samples_tsv, empty)
    rows = table2(lines)
    methods = sorted({r["method"] for r in rows} | {m for m, _ in empty})
    present = {(r["method"], r["knowledge"]) for r in rows}
    nan = {f"{m}{s}": float("nan") for m in ("S_se", "S_re", "S_mean", "S_hal") for s in ("", "_lo", "_hi")}
    rows += [
        {"method": m, "knowledge": k, "level": "all", "sets": 0} | nan
        for m in methods
        for k in [*notes, "all"]
        if (m, k) not in present
    ]
    for r in rows:
        is_all = r["knowledge"] == "all"
        r["empty_sets"] = sum(n for (m, k), n in empty.items() if m == r["method"] and (is_all or k == r["knowledge"]))
        r["note"] = "" if is_all else notes.get(r["knowledge"], "")
    write_tsv_rows(out_csv, rows, TABLE2_COLUMNS, delimiter=",")
    summary = [r for r in rows if r["knowledge"] == "all"]
    cols = ["method", "level", "sets", "S_se", "S_re", "S_mean", "S_hal"]
    ci = [{**r, **{m: f"{r[m]:.3f} [{r[m + '_lo']:.3f}, {r[m + '_hi']:.3f}]" for m in cols[3:]}} for r in summary]
    with atomic_path(out_md) as tmp:
        tmp.write_text(
            "Table II (95 % bootstrap intervals over samples)\n\n" + markdown_table(ci, cols) + _notes_md(notes)
        )


TABLE3_COLUMNS = ["method", "knowledge", "level", "captions", "BLEU", "ROUGE-1", "ROUGE-L", "BERTScore"]


def table3_stage(
    perturb_jsonls: Sequence[str],
    knowledge_tsv: str,
    samples_tsv: str,
    bert_model: str,
    bert_layers: int,
    out_csv: str,
    out_md: str,
) -> None:
    """Rule table3: BLEU, ROUGE-1, ROUGE-L and BERTScore F1 of the noisy captions of k's images against their
    inpainted image's caption, as CSV (every row) and Markdown (per-method overall rows, then the notes)."""
    lines, empty = read_perturbations(perturb_jsonls)
    rows = table3(lines, bertscore_model_path(bert_model), bert_layers)
    write_tsv_rows(out_csv, rows, TABLE3_COLUMNS, delimiter=",")
    summary = [r for r in rows if r["knowledge"] == "all"]
    with atomic_path(out_md) as tmp:
        tmp.write_text(
            "Table III (noisy captions of k's images against the inpainted image's caption)\n\n"
            + markdown_table(summary, ["method", "captions", "BLEU", "ROUGE-1", "ROUGE-L", "BERTScore"])
            + _notes_md(coverage_notes(knowledge_tsv, samples_tsv, empty))
        )
