"""The neuron-set rules (no model): C^k and N_k from the dumps, the baselines' sets of the same size, the summary."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kneurons.h5io import read_dump
from kneurons.io import atomic_path, per_image_files, write_json, write_tsv_rows
from kneurons.metrics import CONTROL
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

BASELINES = ("schwettmann", "pan")
METHODS = ("ours", *BASELINES)
STAGE1 = "ours_stage1"  # the control of ours' second stage: |N_k| units drawn at random from C^k
SHADOWED = (*METHODS, STAGE1)  # the set kinds with a random control
SET_KINDS = (*SHADOWED, *(m + CONTROL for m in SHADOWED))


def excluded_layers(n_layers: int, exclude_last_layer: bool) -> tuple[int, ...]:
    """The layers no method may choose from: the last one when ``exclude_last_layer`` (its outputs at the image
    positions reach no generated token)."""
    return (n_layers - 1,) if exclude_last_layer else ()


def two_stage(v_max: np.ndarray, g_max: np.ndarray, thresholds: dict, exclude_last_layer: bool) -> tuple:
    """C^k and N_k (L, d_ff) bool from max_p V and max_p g (L, d_ff), with the threshold values used and the
    excluded layers: (candidates, final, t_a, t_g, exclude).

    ``thresholds``: {"activation": number or "q<quantile>", "gradcam": number or "q<quantile>"}. A quantile of
    the activation threshold is taken over all neurons' max_p V; of the GradCAM threshold over the candidates'
    max_p g, floored at 0 (a negative GradCAM never marks a neuron that raises y_c).
    """
    n_layers = v_max.shape[0]
    exclude = excluded_layers(n_layers, exclude_last_layer)
    eligible = np.ones(n_layers, bool)
    eligible[list(exclude)] = False
    t_a = resolve_threshold(thresholds["activation"], v_max[eligible])
    # the per-neuron maxima as one-position V and g: the filters' max over positions gives them back
    cand = candidates(v_max[:, None, :], t_a, exclude)
    t_g = resolve_threshold(thresholds["gradcam"], g_max[cand])
    if isinstance(thresholds["gradcam"], str):
        t_g = max(t_g, 0.0)
    return cand, final_set(cand, g_max[:, None, :], t_g), t_a, t_g, exclude


def ours_set(
    v_max: np.ndarray, g_max: np.ndarray, thresholds: dict, exclude_last_layer: bool, knowledge: str, image_id: int
) -> dict:
    """C^k (stage 1) and N_k (stage 2) of one sample (``two_stage``) as the set record the workflow writes, with
    the threshold values actually used."""
    cand, final, t_a, t_g, exclude = two_stage(v_max, g_max, thresholds, exclude_last_layer)
    chosen = NeuronSet.from_mask(final, g_max)
    n_layers = v_max.shape[0]
    return {
        "method": "ours",
        "knowledge": knowledge,
        "image_id": int(image_id),
        "thresholds": {
            "activation": thresholds["activation"],
            "activation_value": t_a,
            "gradcam": thresholds["gradcam"],
            "gradcam_value": t_g if np.isfinite(t_g) else None,  # None: no candidate to rank
        },
        "excluded_layers": list(exclude),
        "candidates": int(cand.sum()),
        "candidate_layer_counts": cand.sum(axis=1).tolist(),
        "size": len(chosen),
        "layer_counts": chosen.layer_counts(n_layers),
        "score": "max_p GradCAM",
        "neurons": chosen.neurons,
    }


def ours_stage(
    activations_dir: str, gradcam_dir: str, thresholds: dict, exclude_last_layer: bool, out_dir: str
) -> None:
    """Rule neurons_ours: ``ours_set`` of every sample from its dumps."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for path in per_image_files(activations_dir, ".h5"):
            acts, attrs = read_dump(path, ["v_max"])
            g_max = read_dump(Path(gradcam_dir) / path.name, ["g_max"])[0]["g_max"]
            record = ours_set(
                acts["v_max"], g_max, thresholds, exclude_last_layer, str(attrs["knowledge"]), int(attrs["image_id"])
            )
            write_json(tmp / f"{path.stem}.json", record)


def _derive_sets(source_dir: str, out_dir: str, make: Callable[[Path, dict], dict]) -> None:
    """For each sample's set ``{image_id}.json`` in ``source_dir``, write ``make(path, that set)`` as the sample's
    set in ``out_dir`` (the directory appears whole or not at all)."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for path in per_image_files(source_dir, ".json"):
            write_json(tmp / path.name, make(path, json.loads(path.read_text())))


def baseline_set(
    method: str,
    ours: dict,
    g_mean: np.ndarray,
    o_mean: np.ndarray,
    unit_logit: np.ndarray,
    exclude_last_layer: bool,
) -> dict:
    """Schwettmann's (mean_p g) or Pan's (mean_p O' · D[:, c]) top-|N_k| neurons of one sample, from the (L, d_ff)
    per-neuron means and D[:, c]; never from the last layer when ``exclude_last_layer``, like ours."""
    if method not in BASELINES:
        raise ValueError(f"baseline method must be one of {BASELINES}, got {method!r}")
    exclude = excluded_layers(g_mean.shape[0], exclude_last_layer)
    # per-neuron means (L, d_ff) as one-position arrays: the scores' mean over positions gives them back
    if method == "schwettmann":
        scores, desc = schwettmann_scores(g_mean[:, None, :]), "mean_p GradCAM"
    else:
        scores, desc = pan_scores(o_mean[:, None, :], unit_logit), "mean_p O' * D[:, c]"
    chosen = NeuronSet.from_mask(top_neurons(scores, ours["size"], exclude), scores)
    return {
        "method": method,
        "knowledge": ours["knowledge"],
        "image_id": ours["image_id"],
        "excluded_layers": list(exclude),
        "size": len(chosen),
        "size_from": "ours",
        "layer_counts": chosen.layer_counts(len(ours["layer_counts"])),
        "score": desc,
        "neurons": chosen.neurons,
    }


def baseline_stage(
    method: str, ours_dir: str, activations_dir: str, gradcam_dir: str, exclude_last_layer: bool, out_dir: str
) -> None:
    """Rule neurons_baseline: ``baseline_set`` of every sample from its dumps."""

    def make(path: Path, ours: dict) -> dict:
        cam, _ = read_dump(Path(gradcam_dir) / f"{path.stem}.h5", ["g_mean", "unit_logit"])
        o_mean = read_dump(Path(activations_dir) / f"{path.stem}.h5", ["o_mean"])[0]["o_mean"]
        return baseline_set(method, ours, cam["g_mean"], o_mean, cam["unit_logit"], exclude_last_layer)

    _derive_sets(ours_dir, out_dir, make)


def _seed(kind: str, shadowed: dict) -> int:
    """The seed of a random set drawn for ``shadowed``'s sample: from the kind, the knowledge and the image id."""
    return zlib.crc32(f"{kind}/{shadowed['knowledge']}/{shadowed['image_id']}".encode())


def stage1_set(ours: dict, v_max: np.ndarray) -> dict:
    """The stage-1 control of ours' set ``ours``: |N_k| units drawn uniformly (seeded by knowledge and image id)
    from the sample's candidates C^k, recomputed from max_p V (L, d_ff) with the activation threshold ``ours``
    used. It asks whether GradCAM's second stage adds anything over the activation difference alone."""
    exclude = tuple(ours["excluded_layers"])
    cand = candidates(v_max[:, None, :], ours["thresholds"]["activation_value"], exclude)
    if int(cand.sum()) != ours["candidates"]:
        raise ValueError(
            f"{ours['knowledge']}/{ours['image_id']}: {int(cand.sum())} candidates from the activation dump, "
            f"the set of ours records {ours['candidates']}"
        )
    seed = _seed(STAGE1, ours)
    flat = np.flatnonzero(cand)
    mask = np.zeros(cand.size, bool)
    mask[np.random.default_rng(seed).choice(flat, size=ours["size"], replace=False)] = True
    chosen = NeuronSet.from_mask(mask.reshape(cand.shape), np.zeros(cand.shape, np.float32))
    return {
        "method": STAGE1,
        "knowledge": ours["knowledge"],
        "image_id": ours["image_id"],
        "seed": seed,
        "excluded_layers": list(exclude),
        "candidates": ours["candidates"],
        "size": len(chosen),
        "size_from": "ours",
        "layer_counts": chosen.layer_counts(cand.shape[0]),
        "score": "none (stage-1 control: |N_k| random units of C^k)",
        "neurons": chosen.neurons,
    }


def stage1_stage(ours_dir: str, activations_dir: str, out_dir: str) -> None:
    """Rule neurons_stage1: ``stage1_set`` of every sample's set of ours, from its activation dump."""

    def make(path: Path, ours: dict) -> dict:
        return stage1_set(ours, read_dump(Path(activations_dir) / f"{path.stem}.h5", ["v_max"])[0]["v_max"])

    _derive_sets(ours_dir, out_dir, make)


def control_set(method: str, shadowed: dict, d_ff: int) -> dict:
    """The random control of ``method``'s set ``shadowed``: as many units in each layer as the set has there, drawn
    uniformly (seeded by method, knowledge and image id), so control and set differ only in which units were
    chosen."""
    if method not in SHADOWED:
        raise ValueError(f"a control shadows one of {SHADOWED}, got {method!r}")
    seed = _seed(method, shadowed)
    mask = random_neurons(shadowed["layer_counts"], d_ff, seed)
    chosen = NeuronSet.from_mask(mask, np.zeros(mask.shape, np.float32))
    return {
        "method": method + CONTROL,
        "control_of": method,
        "knowledge": shadowed["knowledge"],
        "image_id": shadowed["image_id"],
        "seed": seed,
        "size": len(chosen),
        "size_from": method,
        "layer_counts": chosen.layer_counts(len(shadowed["layer_counts"])),
        "score": f"none (random control: {method}'s per-layer counts)",
        "neurons": chosen.neurons,
    }


def control_stage(method: str, method_dir: str, gradcam_dir: str, out_dir: str) -> None:
    """Rule neurons_control: ``control_set`` of every sample's set of ``method``."""

    def make(path: Path, shadowed: dict) -> dict:
        d_ff = read_dump(Path(gradcam_dir) / f"{path.stem}.h5", ["g_mean"])[0]["g_mean"].shape[-1]
        return control_set(method, shadowed, d_ff)

    _derive_sets(method_dir, out_dir, make)


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
        for path in per_image_files(d, ".json"):
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
