"""The report's rules that need no model: layer distribution (Fig. 2), activation heatmaps (Fig. 3) and example
captions (Table I). Decoded neurons (Fig. 3/5) run the model: kneurons.stages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kneurons.coco import read_image
from kneurons.dumpstats import TRACE_DATASETS, traces
from kneurons.figures import HeatmapPanel, layer_shares, plot_heatmaps, plot_layer_distribution
from kneurons.h5io import read_dump
from kneurons.io import read_tsv_rows, write_text, write_tsv_rows
from kneurons.metrics import markdown_table
from kneurons.samples import Candidate, read_tsv
from kneurons.selection import records_by_id, sample_images, selected
from kneurons.tables import read_perturbations


def layer_distribution_stage(summary_tsv: str, out_png: str, out_csv: str) -> None:
    """Rule layer_distribution: each method's neurons per decoder layer, summed over all sets (CSV and Fig. 2)."""
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
    plot_layer_distribution(counts, out_png)


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
    """Rule heatmaps: for each sample of k, O'[l, :, i] of the top-``top`` neurons of N_k over the original image."""
    records = records_by_id(annotations, images)
    panels = []
    for row in selected(read_tsv(selected_tsv)):
        nset = json.loads((Path(sets_dir) / f"{row.image_id}.json").read_text())
        neurons = [(layer, unit) for layer, unit, _ in nset["neurons"][:top]]
        dump = Path(activations_dir) / f"{row.image_id}.h5"
        attrs = read_dump(dump, [])[1]
        record = read_dump(dump, TRACE_DATASETS[str(attrs.get("mode", "full"))])[0]
        found = [(n, t) for n, t in zip(neurons, traces(record, neurons), strict=True) if t is not None]
        panels.append(
            HeatmapPanel(
                title=f"image {row.image_id} (|N_k| = {nset['size']})",
                image=read_image(records[row.image_id].path),
                neurons=[n for n, _ in found],
                traces=[t.astype(np.float32) for _, t in found],
                grid=tuple(int(g) for g in attrs["grid"]),
            )
        )
    plot_heatmaps(panels, top, f"{name}: activation O' of the top-{top} neurons of N_k", out_png)


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
        if float(ln["level"]) == level and ln["seed"] == 0 and ln["set"] == ln["image_id"]:
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
    write_text(out_md, f"Example captions (noise level {level:g}, seed 0)\n\n" + markdown_table(rows, cols))
