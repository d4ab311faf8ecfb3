"""The rules of rules/perturb.smk: the reference noise scale, the no-perturbation reference, each target's sets
perturbed on every image of D (necessity) and patched into its inpainted images (sufficiency), and the tables built
on them (Table II, Table III, restoration, pairwise)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kneurons import metrics, textmetrics
from kneurons.calibration import SCALES, reference_scale
from kneurons.captions import mentions
from kneurons.coco import read_image, read_record, records_by_id
from kneurons.comparisons import (
    PAIRWISE_CAPTION,
    PAIRWISE_COLUMNS,
    RESTORATION_CAPTION,
    RESTORATION_COLUMNS,
    RESTORATION_MARGINS,
    verdict,
)
from kneurons.errors import DataError
from kneurons.figures import Bar, plot_restoration
from kneurons.h5io import read_dump
from kneurons.io import atomic_path, markdown_table, per_image_files, write_json, write_text, write_tsv_rows
from kneurons.lines import caption_line, empty_line, read_lines, read_restorations
from kneurons.metrics import (
    PAIRED,
    RESTORATION,
    SCORES,
    aggregate,
    level_name,
    per_set_scores,
    restoration_scores,
    table_order,
)
from kneurons.names import ALL, BOUNDS, BOUNDS_FILE, CEILING, CONTROL, FLOOR, NONE, ORIGINAL, SHADOWED
from kneurons.neuronsets import read_sets
from kneurons.protocol import Captioning, Protocol
from kneurons.samples import Candidate, read_knowledge, read_tsv, sample_images
from kneurons.tables import (
    MARGIN_COLUMNS,
    TABLE2_CAPTION,
    TABLE2_COLUMNS,
    coverage_notes,
    interval_cell,
    notes_markdown,
    with_intervals,
)
from kneurons.textmetrics import METRICS, TABLE3_CAPTION, TABLE3_COLUMNS, bertscore_model_path

if TYPE_CHECKING:
    from kneurons.generation import Continuation
    from kneurons.models import LoadedModel

# Model code (torch, transformers) is imported inside the functions of the rules that load a model, so the jobs of
# the other rules start without it (bench/job_startup.py).


def noise_scale(scale: str, levels: Sequence[float], activation_dirs: Sequence[str], out_json: str) -> None:
    """Rule noise_scale: the reference scale r of this run and the absolute noise s.d. each level implies.

    ``scale`` "absolute": levels are in activation units (r = 1, the paper's); "calibrated": levels are multiples
    of r computed from the activation dumps of D's original images (each distinct image once).
    """
    if scale not in SCALES:
        raise DataError(f"noise.scale: {scale!r} is not one of {', '.join(SCALES)}")
    record: dict = {"scale": scale, "levels": [float(v) for v in levels]}
    if scale == "absolute":
        r = 1.0
        record |= {"statistic": "none: levels are in activation units", "images": 0}
    else:
        stds = {}
        for d in activation_dirs:
            for path in per_image_files(d, ".h5"):
                stds.setdefault(path.stem, read_dump(path, ["o_std"])[0]["o_std"])
        if not stds:
            raise DataError("noise.scale calibrated: no activation dump to calibrate on (no sample in D)")
        r = reference_scale([stds[k] for k in sorted(stds, key=int)])
        record |= {
            "statistic": "median over (layer, unit) of the mean over D's images of std_p O'",
            "images": len(stds),
        }
    write_json(out_json, record | {"reference_scale": r, "noise_sd": [float(v) * r for v in levels]})


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
    loaded: LoadedModel, annotations: str, images: str, selected_tsv: str, captioning: Captioning, protocol: Protocol
) -> Samples:
    """D (every target's selected rows of ``selected_tsv``, in (knowledge, image id) order) with the original
    images and, when ``protocol`` scores log p, each sample's continuation."""
    from kneurons.logprob import continuations

    rows = sample_images(selected_tsv)
    records = records_by_id(annotations, images)
    pixels = [read_record(records[r.image_id]) for r in rows]
    if not protocol.log_probability:
        return Samples(rows, pixels, None)
    captions, names, ids = (
        [r.caption for r in rows],
        [r.knowledge for r in rows],
        [r.emitted_ids(selected_tsv) for r in rows],
    )
    return Samples(
        rows, pixels, continuations(loaded, pixels, captioning.prompt, captions, names, captioning.synonyms, ids)
    )


def reference_captions(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    selected_tsv: str,
    protocol: Protocol,
    captioning: Captioning,
    out_jsonl: str,
) -> None:
    """Rule reference_captions: the no-perturbation reference, D's clean captions (and log p) once per run. One
    JSON line per (knowledge target k of D, sample of D), method "none", level "none": what Table II's scores
    are without any perturbation."""
    from kneurons.generation import scored_captions

    d = load_samples(loaded, annotations, images, selected_tsv, captioning, protocol)
    scored = scored_captions(loaded, d.pixels, captioning.prompt, d.continuations, **captioning.generation)
    with atomic_path(out_jsonl) as tmp, open(tmp, "w") as out:
        for k in sorted({r.knowledge for r in d.rows}):
            for r, sc in zip(d.rows, scored, strict=True):
                fields = {"method": NONE, "set": 0, "set_size": 0, "perturbation": NONE, "level": NONE}
                out.write(json.dumps(caption_line(sc, r, k, captioning.synonyms, **fields, seed=0)) + "\n")


def _units(nset: dict) -> list[np.ndarray] | None:
    """A set's units by layer (None for an empty set)."""
    from kneurons.perturb import layer_units

    return layer_units(nset["neurons"], len(nset["layer_counts"])) if nset["neurons"] else None


def necessity(
    loaded: LoadedModel,
    d: Samples,
    set_dirs: Mapping[str, str],
    reference: float,
    protocol: Protocol,
    captioning: Captioning,
    out_jsonls: Mapping[str, str],
) -> None:
    """Rule perturb's necessity part: for each neuron set of each set kind in ``set_dirs`` (one target's), caption
    every sample of D (``d``) under each of the ``protocol``'s perturbations (noise levels in units of the
    ``reference`` scale r; zero-ablation), with the log p of each sample's own object. One JSON line per (set,
    perturbation, sample) in ``out_jsonls[kind]``; an empty set gets one line {"set_size": 0, "empty": true} and
    no captions."""
    from kneurons.perturb import perturbed_captions

    conditions = protocol.perturbations()
    rows = [(c, j) for c in conditions for j in range(len(d.rows))]
    for kind, sets_dir in set_dirs.items():
        with atomic_path(out_jsonls[kind]) as tmp, open(tmp, "w") as out:
            for nset in read_sets(sets_dir):
                units = _units(nset)
                if units is None:
                    out.write(empty_line(nset))
                    continue
                scored = perturbed_captions(
                    loaded,
                    d.pixels,
                    captioning.prompt,
                    units,
                    rows,
                    reference,
                    continuations=d.continuations,
                    **captioning.generation,
                )
                for (c, j), sc in zip(rows, scored, strict=True):
                    fields = {
                        "method": nset["method"],
                        "set": nset["image_id"],
                        "set_size": nset["size"],
                        "perturbation": c.kind,
                        "level": c.label,
                        "noise_sd": c.level * reference,
                        "seed": c.seed,
                    }
                    line = caption_line(sc, d.rows[j], nset["knowledge"], captioning.synonyms, **fields)
                    out.write(json.dumps(line) + "\n")


def sufficiency(
    loaded: LoadedModel, d: Samples, set_dirs: Mapping[str, str], captioning: Captioning, out_jsonls: Mapping[str, str]
) -> None:
    """Rule perturb's sufficiency part: for every sample b of one target k (``d``: k's samples), caption b's
    inpainted image with each set of every kind in ``set_dirs`` patched to b's original values (kneurons.restore),
    one JSON line per (set, sample) in ``out_jsonls[kind]``; and, in ``out_jsonls[BOUNDS_FILE]``, b's ceiling
    (every unit patched), floor (nothing patched) and original image (unedited). Each line: the caption, whether it
    names k, and log p of k's first token in b's clean caption."""
    from kneurons.restore import every_unit, no_unit, restored_captions

    sets = {kind: [(nset, _units(nset)) for nset in read_sets(path)] for kind, path in set_dirs.items()}
    patched = [(kind, nset, units) for kind, found in sets.items() for nset, units in found if units is not None]
    bounds = [(CEILING, every_unit(loaded)), (FLOOR, no_unit(loaded))]
    lines: dict[str, list[str]] = {BOUNDS_FILE: []}
    lines |= {kind: [empty_line(n) for n, u in found if u is None] for kind, found in sets.items()}
    for j, b in enumerate(d.rows):
        unit_sets = [units for _, _, units in patched] + [units for _, units in bounds]
        scored, original = restored_captions(
            loaded,
            d.pixels[j],
            read_image(b.inpainted),
            captioning.prompt,
            unit_sets,
            d.continuations[j] if d.continuations else None,
            **captioning.generation,
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
                "mentions_target": mentions(caption, b.knowledge, captioning.synonyms_of(b.knowledge)),
                "logp": logp,
            }
            lines[BOUNDS_FILE if kind in BOUNDS else kind].append(json.dumps(line) + "\n")
    for kind, path in out_jsonls.items():
        write_text(path, "".join(lines[kind]))


def perturb(
    loaded: LoadedModel,
    data: Mapping[str, str],
    knowledge: str,
    set_dirs: Mapping[str, str],
    protocol: Protocol,
    captioning: Captioning,
    out: Mapping[str, Mapping[str, str]],
) -> None:
    """Rule perturb: one target's (``knowledge``) sets of every kind in ``set_dirs``, perturbed on every image of D
    (``necessity``, into ``out["perturbed"]``) and, when the protocol restores, patched into the target's inpainted
    images (``sufficiency``, into ``out["restored"]``, the bounds under ``BOUNDS_FILE``). ``data``: the split
    (``annotations``, ``images``), D (``selected``) and the reference noise scale (``scale``, rule noise_scale's
    JSON); D is read and its continuations scored once for both parts."""
    d = load_samples(loaded, data["annotations"], data["images"], data["selected"], captioning, protocol)
    r = float(json.loads(Path(data["scale"]).read_text())["reference_scale"])
    necessity(loaded, d, set_dirs, r, protocol, captioning, out["perturbed"])
    if protocol.restoration:
        sufficiency(loaded, d.of(knowledge), set_dirs, captioning, out["restored"])


def table2(perturb_jsonls: Sequence[str], knowledge_tsv: str, samples_tsv: str, out_csv: str, out_md: str) -> None:
    """Rule table2: Table II as CSV (every row) and Markdown (the rows over all knowledge, per level).

    Every method gets a row (sets 0, metrics nan, with a note) for a target with no sample or only empty sets.
    """
    lines, empty = read_lines(perturb_jsonls)
    notes = coverage_notes(read_knowledge(knowledge_tsv), read_tsv(samples_tsv), empty)
    rows = metrics.table2(lines)
    methods = sorted({r["method"] for r in rows} | {m for m, _ in empty})
    present = {(r["method"], r["knowledge"]) for r in rows}
    nan = dict.fromkeys(with_intervals(SCORES + tuple(MARGIN_COLUMNS)), float("nan"))
    rows += [
        {"method": m, "knowledge": k, "level": ALL, "sets": 0} | nan
        for m in methods
        for k in [*notes, ALL]
        if (m, k) not in present
    ]
    rows.sort(key=table_order)
    for r in rows:
        is_all = r["knowledge"] == ALL
        r["empty_sets"] = sum(n for (m, k), n in empty.items() if m == r["method"] and (is_all or k == r["knowledge"]))
        r["note"] = "" if is_all else notes.get(r["knowledge"], "")
    write_tsv_rows(out_csv, rows, TABLE2_COLUMNS, delimiter=",")
    shown = [
        {"method": r["method"], "level": level_name(r["level"]), "sets": r["sets"]}
        | {m: interval_cell(r, m) for m in (*SCORES, *MARGIN_COLUMNS)}
        for r in rows
        if r["knowledge"] == ALL
    ]
    write_text(
        out_md,
        TABLE2_CAPTION
        + markdown_table(shown, ["level", "method", "sets", *SCORES, *MARGIN_COLUMNS])
        + notes_markdown(notes),
    )


def table3(
    perturb_jsonls: Sequence[str],
    knowledge_tsv: str,
    samples_tsv: str,
    bert_model: str,
    bert_layers: int,
    out_csv: str,
    out_md: str,
) -> None:
    """Rule table3: BLEU, ROUGE-1, ROUGE-L and BERTScore F1 of the perturbed (and the reference's clean) captions
    of k's images against their inpainted image's caption, as CSV (every row) and Markdown (rows over all
    knowledge, per level, then the notes), BERTScore from ``bert_model``'s first ``bert_layers`` layers."""
    lines, empty = read_lines(perturb_jsonls)
    rows = textmetrics.table3(lines, bertscore_model_path(bert_model), bert_layers) if lines else []
    write_tsv_rows(out_csv, rows, TABLE3_COLUMNS, delimiter=",")
    shown = [
        r | {"level": level_name(r["level"])} | {m: interval_cell(r, m) for m in METRICS}
        for r in rows
        if r["knowledge"] == ALL
    ]
    notes = coverage_notes(read_knowledge(knowledge_tsv), read_tsv(samples_tsv), empty)
    write_text(
        out_md,
        TABLE3_CAPTION
        + markdown_table(shown, ["level", "method", "sets", "captions", *METRICS])
        + notes_markdown(notes),
    )


def restoration(
    restore_jsonls: Sequence[str], knowledge_tsv: str, samples_tsv: str, out_csv: str, out_md: str, out_png: str
) -> None:
    """Rule restoration: the restoration table (CSV: every row; Markdown: over all knowledge) and its figure (each
    method beside its control, the ceiling and the floor, with intervals)."""
    lines, bounds, empty = read_restorations(restore_jsonls)
    notes = coverage_notes(read_knowledge(knowledge_tsv), read_tsv(samples_tsv), empty)
    rows = aggregate(restoration_scores(lines, bounds), RESTORATION, RESTORATION)
    for r in rows:
        del r["level"]  # one level, restoration's
        r["note"] = "" if r["knowledge"] == ALL else notes.get(r["knowledge"], "")
    write_tsv_rows(out_csv, rows, RESTORATION_COLUMNS, delimiter=",")
    overall = {r["method"]: r for r in rows if r["knowledge"] == ALL}
    order = [*(k for m in SHADOWED for k in (m, m + CONTROL)), *BOUNDS]
    columns = ["method", "sets", *RESTORATION, *RESTORATION_MARGINS]
    shown = [
        {"method": m, "sets": overall[m]["sets"]} | {c: interval_cell(overall[m], c) for c in columns[2:]}
        for m in order
        if m in overall
    ]
    body = markdown_table(shown, columns) if shown else "No set was patched: no knowledge target has a sample in D.\n"
    write_text(out_md, RESTORATION_CAPTION + body + notes_markdown(notes))
    panels = {
        metric: [
            Bar(
                m,
                tuple(overall[m][f"{metric}{s}"] for s in ("", "_lo", "_hi")),
                m.endswith(CONTROL),
                int(overall[m]["sets"]),
            )
            for m in order
            if m in overall and m != ORIGINAL
        ]
        for metric in RESTORATION
    }
    plot_restoration(panels, out_png)


def pairwise(perturb_jsonls: Sequence[str], restore_jsonls: Sequence[str], out_csv: str, out_md: str) -> None:
    """Rule pairwise: the pairwise table (CSV: every row; Markdown: over all knowledge, each comparison and
    level)."""
    per_set = per_set_scores(read_lines(perturb_jsonls)[0])
    lines, bounds, _ = read_restorations(restore_jsonls)
    per_set |= restoration_scores(lines, bounds)
    rows = sorted(metrics.pairwise(per_set), key=table_order)
    for r in rows:
        r["verdict"] = verdict(r)
        r["comparison"] = r.pop("method")
    write_tsv_rows(out_csv, rows, PAIRWISE_COLUMNS, delimiter=",")
    shown = [
        {"comparison": r["comparison"], "level": level_name(r["level"]), "sets": r["sets"], "verdict": r["verdict"]}
        | {m: interval_cell(r, m) for m in PAIRED}
        for r in rows
        if r["knowledge"] == ALL
    ]
    columns = ["level", "comparison", "sets", *PAIRED, "verdict"]
    body = markdown_table(shown, columns) if shown else "No set was perturbed: nothing to compare.\n"
    write_text(out_md, PAIRWISE_CAPTION + body)
