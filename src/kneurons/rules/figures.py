"""The rules of rules/figures.smk: the layer distribution (Fig. 2), the activation heatmaps (Fig. 3), the
dose-response figure, the decoded neurons (the one rule here that loads the model) and the example captions
(Table I)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kneurons.coco import read_record, records_by_id
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
from kneurons.io import markdown_table, read_tsv_rows, write_text, write_tsv_rows
from kneurons.lines import read_lines
from kneurons.metrics import table_order
from kneurons.names import ALL, CONTROL, NONE, SHADOWED
from kneurons.neuronsets import read_sets
from kneurons.reporting import dose_level, dose_point, specificity_statement, strongest
from kneurons.samples import Candidate, no_sample_note, read_tsv, sample_images, selected

if TYPE_CHECKING:
    from kneurons.models import LoadedModel

# Model code (torch, transformers) is imported inside the functions of the rules that load a model, so the jobs of
# the other rules start without it (bench/job_startup.py).


def layer_distribution(summary_tsv: str, out_png: str, out_csv: str, out_md: str) -> None:
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
    plot_layer_distribution({m: c for m, c in counts.items() if not m.endswith(CONTROL)}, out_png)


def heatmaps(
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


def dose_response(table2_csv: str, pairwise_csv: str, out_png: str, out_md: str) -> None:
    """Rule dose_response: S_re against S_se, and dlogp_other against dlogp_own, of every method and its control
    through the noise levels and under zero-ablation (from Table II's rows over all knowledge); the specificity
    statement (Table II and the pairwise table) goes to ``out_md``, beside the figure in the report, not into it."""
    rows = read_tsv_rows(table2_csv, delimiter=",")
    overall = [r for r in rows if r["knowledge"] == ALL and r["level"] != ALL and r["sets"] != "0"]
    curves: dict[str, list[DosePoint]] = {}
    controls: dict[str, list[DosePoint]] = {}
    reference = None
    for r in sorted(overall, key=lambda r: table_order(r | {"level": dose_level(r["level"])})):
        level, method = dose_level(r["level"]), r["method"]
        if method == NONE:
            reference = dose_point(r, level)
        elif method.endswith(CONTROL):
            controls.setdefault(method.removesuffix(CONTROL), []).append(dose_point(r, level))
        else:
            curves.setdefault(method, []).append(dose_point(r, level))
    # the methods in the order (and so the colours) of the other figures: ours, the baselines, ours_stage1
    rank = {m: i for i, m in enumerate(SHADOWED)}
    curves = {m: curves[m] for m in sorted(curves, key=lambda m: (rank.get(m, len(rank)), m))}
    if not curves:
        statement = "No neuron set was perturbed: no knowledge target has a sample in D, or every set is empty."
        empty_figure(f"Dose–response: {statement}", out_png)
    else:
        statement = specificity_statement(rows, read_tsv_rows(pairwise_csv, delimiter=","))
        plot_dose_response(curves, controls, reference, out_png)
    write_text(out_md, "Dose–response (each method and its control)\n\n" + statement + "\n")


def examples(
    perturb_jsonls: Sequence[str], selected_tsv: str, methods: Sequence[str], level: float, out_csv: str, out_md: str
) -> None:
    """Rule examples (Table I): for each target's first sample, its original and inpainted captions and the caption
    of the same image with that sample's set of each method perturbed at ``level``, seed 0."""
    lines, empty = read_lines(perturb_jsonls)
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
    body = markdown_table(rows, cols) if rows else no_sample_note(read_tsv(selected_tsv)) + "\n"
    write_text(out_md, f"Example captions (noise level {level:g}, seed 0)\n\n" + body)


DECODED_COLUMNS = ["method", "knowledge", "set", "rank", "layer", "unit", "score", "tokens"]


def decoded_neurons(
    loaded: LoadedModel, set_dirs: Sequence[str], samples_tsv: str, top: int, out_csv: str, out_md: str
) -> None:
    """Rule decoded_neurons: the ``top`` tokens W_U · W_down[:, i] promotes for every neuron of every set (CSV);
    the Markdown shows each method's ``top`` highest-scored neurons of each target's first sample (or says why
    there is none: no sample in D, ``samples_tsv``'s reasons, or only empty sets). Each distinct neuron is decoded
    once, in one product per layer."""
    from kneurons.vocab import decode_neurons

    sets = [s for d in set_dirs for s in read_sets(d)]
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
        body = no_sample_note(read_tsv(samples_tsv)) + "\n"
    write_text(
        out_md, f"Decoded neurons: the top-{top} tokens of W_U · W_down[:, i] (first sample of each target)\n\n" + body
    )
