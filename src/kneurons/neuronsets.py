"""The neuron sets of one sample as the workflow writes them (``results/neurons/{kind}/{k}/{image_id}.json``): C^k
and N_k from the dumps' per-neuron statistics (the two stages), the baselines' sets of the same size, the stage-1
control and each kind's random control; and the reader of a set directory."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from kneurons.io import per_image_files
from kneurons.names import BASELINES, CONTROL, IG_DAI, SHADOWED, STAGE1
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

# What each derived kind is drawn from: the per-neuron statistics (L, d_ff) it reads, by dump ("activations":
# v_max = max_p V, o_mean = mean_p O'; "gradcam": g_max = max_p g, g_mean = mean_p g, unit_logit = D[:, c],
# ig = Σ_p IG).
NEEDS = {
    "schwettmann": {"gradcam": ["g_mean"]},
    "pan": {"activations": ["o_mean"], "gradcam": ["unit_logit"]},
    "ig": {"gradcam": ["ig"]},
    IG_DAI: {"gradcam": ["ig"]},
    STAGE1: {"activations": ["v_max"]},
    CONTROL: {"gradcam": ["g_mean"]},
}
IG_SHARE = 0.2  # Dai et al.'s t: a unit's IG over t × the sample's largest
# The scores of the baselines from a sample's statistics, and how each set file names its score.
BASELINE_SCORES = {
    "schwettmann": (lambda s: schwettmann_scores(s["g_mean"][:, None, :]), "mean_p GradCAM"),
    "pan": (lambda s: pan_scores(s["o_mean"][:, None, :], s["unit_logit"]), "mean_p O' * D[:, c]"),
    "ig": (lambda s: s["ig"], "sum_p integrated gradients of P(c) (Dai et al.)"),
}


class TwoStage(NamedTuple):
    """The two stages of one sample: C^k and N_k (L, d_ff) bool, the threshold values used and the excluded
    layers."""

    candidates: np.ndarray
    final: np.ndarray
    t_a: float
    t_g: float
    exclude: tuple[int, ...]


def excluded_layers(n_layers: int, exclude_last_layer: bool) -> tuple[int, ...]:
    """The layers no method may choose from: the last one when ``exclude_last_layer`` (its outputs at the image
    positions reach no generated token)."""
    return (n_layers - 1,) if exclude_last_layer else ()


def two_stage(v_max: np.ndarray, g_max: np.ndarray, thresholds: Mapping, exclude_last_layer: bool) -> TwoStage:
    """C^k and N_k (L, d_ff) bool from max_p V and max_p g (L, d_ff), with the threshold values used and the
    excluded layers.

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
    return TwoStage(cand, final_set(cand, g_max[:, None, :], t_g), t_a, t_g, exclude)


def ours_set(found: TwoStage, g_max: np.ndarray, thresholds: Mapping, knowledge: str, image_id: int) -> dict:
    """C^k (stage 1) and N_k (stage 2) of one sample (``found``, from ``two_stage`` with ``thresholds``) as the set
    record the workflow writes, with the threshold values actually used; N_k ranked by max_p g (``g_max``)."""
    cand, final, t_a, t_g, exclude = found
    chosen = NeuronSet.from_mask(final, g_max)
    n_layers = g_max.shape[0]
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
        "neurons": chosen.rows(),
    }


def baseline_set(method: str, ours: dict, stats: Mapping[str, np.ndarray], exclude_last_layer: bool) -> dict:
    """A baseline's top-|N_k| neurons of one sample by its score (``BASELINE_SCORES``: Schwettmann's mean_p g,
    Pan's mean_p O' · D[:, c], Dai et al.'s Σ_p IG) from the sample's per-neuron statistics ``stats`` (L, d_ff);
    never from the last layer when ``exclude_last_layer``, like ours."""
    if method not in BASELINES:
        raise ValueError(f"baseline method must be one of {BASELINES}, got {method!r}")
    score, desc = BASELINE_SCORES[method]
    scores = score(stats)
    exclude = excluded_layers(scores.shape[0], exclude_last_layer)
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
        "neurons": chosen.rows(),
    }


def ig_dai_set(ours: dict, ig: np.ndarray, share_of_max: float, exclude_last_layer: bool) -> dict:
    """Dai et al.'s selection of one sample: the units whose Σ_p IG (L, d_ff) exceeds ``share_of_max`` (their t,
    0.2) times the largest over every layer (never from the last layer when ``exclude_last_layer``), its own size
    (not |N_k|); the knowledge-level sets then keep the units a share of the samples hold (kneurons.editsets)."""
    exclude = excluded_layers(ig.shape[0], exclude_last_layer)
    eligible = ig.astype(np.float64).copy()
    eligible[list(exclude)] = -np.inf
    top = float(eligible.max()) if eligible.size else float("-inf")
    threshold = share_of_max * top
    mask = (eligible > threshold) if top > 0 else np.zeros(ig.shape, bool)
    chosen = NeuronSet.from_mask(mask, ig)
    return {
        "method": IG_DAI,
        "knowledge": ours["knowledge"],
        "image_id": ours["image_id"],
        "excluded_layers": list(exclude),
        "threshold": {"share_of_max": share_of_max, "value": threshold if top > 0 else None},
        "size": len(chosen),
        "layer_counts": chosen.layer_counts(ig.shape[0]),
        "score": "sum_p integrated gradients of P(c), over t x the sample's largest (Dai et al.)",
        "neurons": chosen.rows(),
    }


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
        "neurons": chosen.rows(),
    }


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
        "neurons": chosen.rows(),
    }


def needs(kind: str) -> dict[str, list[str]]:
    """The statistics ``derived_set`` reads for ``kind``, by dump (``NEEDS``)."""
    return NEEDS[CONTROL if kind.endswith(CONTROL) else kind]


def derived_set(
    kind: str, source: dict, stats: Mapping[str, np.ndarray], exclude_last_layer: bool, ig_share: float = IG_SHARE
) -> dict:
    """The set of ``kind`` drawn from ``source``: a baseline's, Dai et al.'s (IG over ``ig_share`` × its largest)
    or the stage-1 control's from ours' set, a random control (kind "{m}_control") from m's set; ``stats``: the
    sample's per-neuron statistics (L, d_ff) by name, at least those ``needs(kind)`` lists."""
    if kind in BASELINES:
        return baseline_set(kind, source, stats, exclude_last_layer)
    if kind == IG_DAI:
        return ig_dai_set(source, stats["ig"], ig_share, exclude_last_layer)
    if kind == STAGE1:
        return stage1_set(source, stats["v_max"])
    if kind.endswith(CONTROL):
        return control_set(kind.removesuffix(CONTROL), source, stats["g_mean"].shape[-1])
    raise ValueError(f"a derived set kind is a baseline, {IG_DAI}, {STAGE1} or a control, got {kind!r}")


def sample_sets(
    stats: Mapping[str, np.ndarray],
    thresholds: Mapping,
    exclude_last_layer: bool,
    knowledge: str,
    image_id: int,
    ig_share: float = IG_SHARE,
) -> tuple[dict[str, dict], np.ndarray]:
    """Every set kind of one sample from its per-neuron statistics (``stats``: both dumps' v_max, o_mean, g_max,
    g_mean, unit_logit, ig, each (L, d_ff)), as the workflow's rules write them (ours, the baselines, the stage-1
    control, then each one's random control, then Dai et al.'s own selection), and C^k (L, d_ff) bool."""
    found = two_stage(stats["v_max"], stats["g_max"], thresholds, exclude_last_layer)
    sets = {"ours": ours_set(found, stats["g_max"], thresholds, knowledge, image_id)}
    for kind in (*BASELINES, STAGE1):
        sets[kind] = derived_set(kind, sets["ours"], stats, exclude_last_layer)
    for method in SHADOWED:
        sets[method + CONTROL] = derived_set(method + CONTROL, sets[method], stats, exclude_last_layer)
    sets[IG_DAI] = derived_set(IG_DAI, sets["ours"], stats, exclude_last_layer, ig_share)
    return sets, found.candidates


def read_sets(sets_dir: str | os.PathLike) -> Iterator[dict]:
    """The sets of a set directory (``{image_id}.json`` each), in image id order."""
    for path in per_image_files(sets_dir, ".json"):
        yield json.loads(path.read_text())
