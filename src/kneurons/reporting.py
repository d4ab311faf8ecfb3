"""The report's rules that need no model: layer distribution (Fig. 2), activation heatmaps (Fig. 3), the dose–response
figure and example captions (Table I). Decoded neurons (Fig. 3/5) run the model: kneurons.stages."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kneurons.coco import read_record
from kneurons.dumpstats import TRACE_DATASETS, traces
from kneurons.figures import (
    DosePoint,
    HeatmapPanel,
    empty_figure,
    layer_shares,
    plot_dose_response,
    plot_heatmaps,
    plot_layer_distribution,
)
from kneurons.h5io import read_dump
from kneurons.io import read_tsv_rows, write_text, write_tsv_rows
from kneurons.metrics import ALL, CONTROL, NONE, RESTORE, level_name, level_order, markdown_table, table_order
from kneurons.samples import Candidate, read_tsv
from kneurons.selection import no_sample_note, records_by_id, sample_images, selected
from kneurons.tables import read_perturbations


def layer_distribution_stage(summary_tsv: str, out_png: str, out_csv: str, out_md: str) -> None:
    """Rule layer_distribution: each method's neurons per decoder layer, summed over all sets (CSV and Fig. 2), and
    (Markdown) each method's share of neurons in the last layer, whose image-position outputs reach no generated
    token."""
    counts: dict[str, np.ndarray] = {}
    for row in read_tsv_rows(summary_tsv):
        c = np.array(row["layer_counts"].split(), dtype=np.int64)
        counts[row["method"]] = counts.get(row["method"], np.zeros_like(c)) + c
    shares = layer_shares(counts)
    rows = [
        {"method": m, "layer": layer, "neurons": int(c[layer]), "share": round(float(shares[m][layer]), 4)}
        for m, c in counts.items()
        for layer in range(len(c))
    ]
    write_tsv_rows(out_csv, rows, ["method", "layer", "neurons", "share"], delimiter=",")
    last = [
        {"method": m, "neurons": int(c.sum()), "last_layer": len(c) - 1, "last_layer_share": float(shares[m][-1])}
        for m, c in counts.items()
    ]
    write_text(
        out_md,
        "Layer distribution: each method's neurons over all sets, and the share in the last decoder layer (its "
        "outputs at the image positions reach no generated token)\n\n"
        + (
            markdown_table(last, ["method", "neurons", "last_layer", "last_layer_share"])
            if last
            else "No neuron set.\n"
        ),
    )
    plot_layer_distribution(counts, out_png)


def strongest(neurons: Sequence[Sequence], v_max: np.ndarray, top: int) -> list[tuple[int, int]]:
    """The ``top`` neurons (layer, unit) of a set with the largest activation difference max_p V (``v_max`` (L,
    d_ff)): the heatmaps' choice."""
    return sorted(((int(n[0]), int(n[1])) for n in neurons), key=lambda n: -v_max[n])[:top]


def heatmaps_stage(
    annotations: str,
    images: str,
    selected_tsv: str,
    activations_dir: str,
    sets_dir: str,
    name: str,
    top: int,
    out_png: str,
) -> None:
    """Rule heatmaps: for each sample of k, the top-``top`` neurons of N_k by activation difference (max_p V):
    their mean O' over the original image (the paper's map) and each one's O'[l, :, i], each token's value on the
    pixels the dump's token map says it covers."""
    records = records_by_id(annotations, images)
    panels = []
    for row in selected(read_tsv(selected_tsv)):
        nset = json.loads((Path(sets_dir) / f"{row.image_id}.json").read_text())
        dump = Path(activations_dir) / f"{row.image_id}.h5"
        attrs = read_dump(dump, [])[1]
        record = read_dump(dump, ["v_max", "token_regions", *TRACE_DATASETS[str(attrs.get("mode", "full"))]])[0]
        neurons = strongest(nset["neurons"], record["v_max"], top)
        found = [(n, t) for n, t in zip(neurons, traces(record, neurons), strict=True) if t is not None]
        panels.append(
            HeatmapPanel(
                title=f"image {row.image_id} (|N_k| = {nset['size']})",
                image=read_record(records[row.image_id]),
                neurons=[n for n, _ in found],
                traces=[t.astype(np.float32) for _, t in found],
                regions=record["token_regions"],
            )
        )
    plot_heatmaps(panels, top, f"{name}: activation O' of the top-{top} neurons of N_k by max_p V", out_png)


def _point(row: dict, level: float | str) -> DosePoint:
    scores = ("S_re", "S_se", "dlogp_other", "dlogp_own")
    return DosePoint(level, {m: tuple(float(row[f"{m}{s}"] or "nan") for s in ("", "_lo", "_hi")) for m in scores})


def _level(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def specificity_statement(rows: Sequence[dict], pairs: Sequence[dict]) -> str:
    """What the intervals say at each perturbation, from Table II's rows and the pairwise table's rows over all
    knowledge: each pairwise comparison's S_mean difference (paired by sample) with its verdict ("more specific"
    or "not separable"), which methods suppress k beyond their control (dS_se interval above 0), and each
    method's dS_mean (margin over its own control)."""
    by_level: dict[float | str, list[tuple[str, dict[str, tuple[float, float, float]]]]] = defaultdict(list)
    for r in rows:
        has_margin = r["dS_mean"] != "" and not math.isnan(float(r["dS_mean"]))
        if r["knowledge"] == ALL and r["level"] != ALL and has_margin:
            margins = {m: tuple(float(r[f"{m}{s}"]) for s in ("", "_lo", "_hi")) for m in ("dS_se", "dS_mean")}
            by_level[_level(r["level"])].append((r["method"], margins))
    compared: dict[float | str, list[str]] = defaultdict(list)
    for p in pairs:
        if p["knowledge"] == ALL and p["level"] not in (ALL, RESTORE) and p["S_mean"] not in ("", "nan"):
            cell = f"{float(p['S_mean']):+.3f} [{float(p['S_mean_lo']):+.3f}, {float(p['S_mean_hi']):+.3f}]"
            compared[_level(p["level"])].append(f"{p['comparison']} {cell} {p['verdict']}")
    parts, beyond = [], []
    for level in sorted(by_level, key=level_order):
        ranked = sorted(by_level[level], key=lambda mv: -mv[1]["dS_mean"][0])
        name = level_name(level)
        parts.append(f"{name}: " + " > ".join(f"{m} {v['dS_mean'][0]:+.3f}" for m, v in ranked))
        beyond += [f"{m} at {name}" for m, v in ranked if v["dS_se"][1] > 0]
    paired = [f"{level_name(level)}: " + ", ".join(compared[level]) for level in sorted(compared, key=level_order)]
    return " ".join(
        [
            "Pairwise S_mean differences (paired by sample; results/tables/pairwise.md) and what their intervals say: "
            + ("; ".join(paired) if paired else "no comparison")
            + ".",
            "Suppressing k beyond its own control (dS_se interval above 0): "
            + ("; ".join(beyond) if beyond else "none")
            + ".",
            "dS_mean (method minus its control) by perturbation: " + "; ".join(parts) + ".",
        ]
    )


def dose_response_stage(table2_csv: str, pairwise_csv: str, out_png: str, out_md: str) -> None:
    """Rule dose_response: S_re against S_se, and dlogp_other against dlogp_own, of every method and its control
    through the noise levels and under zero-ablation (from Table II's rows over all knowledge), with the
    specificity statement (Table II and the pairwise table) as its caption (also written to ``out_md`` for the
    report)."""
    rows = read_tsv_rows(table2_csv, delimiter=",")
    overall = [r for r in rows if r["knowledge"] == ALL and r["level"] != ALL and r["sets"] != "0"]
    curves: dict[str, list[DosePoint]] = {}
    controls: dict[str, list[DosePoint]] = {}
    reference = None
    for r in sorted(overall, key=lambda r: table_order(r | {"level": _level(r["level"])})):
        level, method = _level(r["level"]), r["method"]
        if method == NONE:
            reference = _point(r, level)
        elif method.endswith(CONTROL):
            controls.setdefault(method.removesuffix(CONTROL), []).append(_point(r, level))
        else:
            curves.setdefault(method, []).append(_point(r, level))
    if not curves:
        statement = "No neuron set was perturbed: no knowledge target has a sample in D, or every set is empty."
        empty_figure(f"Dose–response: {statement}", out_png)
    else:
        statement = specificity_statement(rows, read_tsv_rows(pairwise_csv, delimiter=","))
        plot_dose_response(curves, controls, reference, statement, out_png)
    write_text(out_md, "Dose–response (each method and its control)\n\n" + statement + "\n")


def example_level(levels: Sequence[float], level: float | None) -> float:
    """The noise level of the example captions: ``level`` if given, else the middle configured level (paper: 80)."""
    if level is None:
        return float(sorted(levels)[len(levels) // 2])
    if float(level) not in {float(v) for v in levels}:
        raise ValueError(f"report.example_level: {level} is not one of noise.levels {list(levels)}")
    return float(level)


def examples_stage(
    perturb_jsonls: Sequence[str], selected_tsv: str, methods: Sequence[str], level: float, out_csv: str, out_md: str
) -> None:
    """Rule examples (Table I): for each target's first sample, its original and inpainted captions and the caption
    of the same image with that sample's set of each method perturbed at ``level``, seed 0."""
    lines, empty = read_perturbations(perturb_jsonls)
    by_key = {}
    for ln in lines:
        noise = isinstance(ln["level"], int | float)  # not the ablation or the reference
        if noise and float(ln["level"]) == level and ln["seed"] == 0 and ln["set"] == ln["image_id"]:
            by_key[(ln["method"], ln["knowledge"], ln["image_id"])] = ln["caption"]
    first: dict[str, Candidate] = {}
    for r in sample_images(selected_tsv):
        first.setdefault(r.knowledge, r)
    rows = []
    for k, r in first.items():
        row = {"knowledge": k, "image_id": r.image_id, "original": r.caption, "inpainted": r.inpainted_caption}
        row |= {m: by_key.get((m, k, r.image_id), "(empty set)" if empty[(m, k)] else "") for m in methods}
        rows.append(row)
    cols = ["knowledge", "image_id", "original", "inpainted", *methods]
    write_tsv_rows(out_csv, rows, cols, delimiter=",")
    body = markdown_table(rows, cols) if rows else no_sample_note(selected_tsv) + "\n"
    write_text(out_md, f"Example captions (noise level {level:g}, seed 0)\n\n" + body)
