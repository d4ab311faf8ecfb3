"""The rules of rules/neurons.smk: the activation and GradCAM dumps (the model's one job per target), the two-stage
sets C^k and N_k, the baselines' sets of the same size, the stage-1 and random controls, the summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kneurons.coco import read_image, read_record, records_by_id
from kneurons.dumpstats import activation_record, gradcam_record
from kneurons.errors import DataError
from kneurons.h5io import read_dump, write_dump
from kneurons.io import atomic_path, per_image_files, write_json, write_tsv_rows
from kneurons.names import CONTROL, IG_DAI, STAGE1
from kneurons.neuronsets import derived_set, needs, ours_set, read_sets, two_stage
from kneurons.protocol import Captioning
from kneurons.samples import Candidate, read_tsv, selected

if TYPE_CHECKING:
    from kneurons.dumps import TokenLayout
    from kneurons.models import LoadedModel

# Model code (torch, transformers) is imported inside the functions of the rules that load a model, so the jobs of
# the other rules start without it (bench/job_startup.py).


def _dump_attrs(loaded: LoadedModel, prompt: str, row: Candidate, layout: TokenLayout) -> dict:
    return {
        "model": str(loaded.path),
        "family": loaded.family.name,
        "prompt": prompt,
        "image_tokens": layout.n_tokens,
        "knowledge": row.knowledge,
        "image_id": row.image_id,
    }


def dumps(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    selected_tsv: str,
    captioning: Captioning,
    settings: Mapping,
    out: Mapping[str, str],
) -> None:
    """Rule dumps: for each sample of k (``selected_tsv``), ``out["activations"]/{image_id}.h5`` with the
    statistics of O' of the original and inpainted image, and (``settings["mode"]`` full) both O' (L, P, d_ff) f16
    or (compact) the traces of the strongest neurons (``settings["trace_share"]``), and the image's token layout
    (``token_positions`` (P,), ``token_regions`` (P, 4)); and ``out["gradcam"]/{image_id}.h5`` with max_p g and
    mean_p g (L, d_ff), D[:, c] (L, d_ff) for Pan's score and (full) g (L, P, d_ff) f32, for the logit of k's
    first caption token."""
    from kneurons.dumps import gradcam_at, image_activations, target_prefix
    from kneurons.integrated import integrated_gradients

    records = records_by_id(annotations, images)
    rows = selected(read_tsv(selected_tsv))
    mode, prompt = settings["mode"], captioning.prompt
    with atomic_path(out["activations"]) as tmp:
        tmp.mkdir()
        for row in rows:
            pixels = [read_record(records[row.image_id]), read_image(row.inpainted)]
            (original, layout), (inpainted, _) = image_activations(loaded, pixels, prompt)
            if original.shape != inpainted.shape:
                raise DataError(
                    f"{row.inpainted}: {inpainted.shape[1]} image tokens against the original image's "
                    f"{original.shape[1]}; the inpainted image must keep the original's size"
                )
            write_dump(
                tmp / f"{row.image_id}.h5",
                activation_record(original, inpainted, mode, settings["trace_share"]) | layout.record(),
                _dump_attrs(loaded, prompt, row, layout) | {"mode": mode},
            )
    with atomic_path(out["gradcam"]) as tmp:
        tmp.mkdir()
        for row in rows:
            image = read_record(records[row.image_id])
            synonyms = captioning.synonyms_of(row.knowledge)
            ids = row.emitted_ids(selected_tsv)
            target = target_prefix(loaded, image, prompt, row.caption, row.knowledge, synonyms, ids)
            cam = gradcam_at(loaded, target)
            ig = integrated_gradients(loaded, target, settings["ig_steps"], settings["ig_rows"])
            attrs = _dump_attrs(loaded, prompt, row, cam.layout) | {
                "token": cam.token,
                "token_id": cam.token_id,
                "position": cam.position,
                "mode": mode,
            }
            record = gradcam_record(cam.gradcam, cam.unit_logit, mode, ig) | cam.layout.record()
            write_dump(tmp / f"{row.image_id}.h5", record, attrs)


def neurons_ours(dump_dirs: Mapping[str, str], thresholds: Mapping, exclude_last_layer: bool, out_dir: str) -> None:
    """Rule neurons_ours: C^k and N_k (``kneurons.neuronsets.ours_set``) of every sample, from max_p V of its
    activation dump and max_p g of its GradCAM dump (``dump_dirs["activations"]``, ``dump_dirs["gradcam"]``)."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for path in per_image_files(dump_dirs["activations"], ".h5"):
            acts, attrs = read_dump(path, ["v_max"])
            g_max = read_dump(Path(dump_dirs["gradcam"]) / path.name, ["g_max"])[0]["g_max"]
            found = two_stage(acts["v_max"], g_max, thresholds, exclude_last_layer)
            record = ours_set(found, g_max, thresholds, str(attrs["knowledge"]), int(attrs["image_id"]))
            write_json(tmp / f"{path.stem}.json", record)


def _derive(
    kind: str, source_dir: str, dump_dirs: Mapping[str, str], exclude_last_layer: bool, out_dir: str, **options: float
) -> None:
    """For each sample's set in ``source_dir``, the set of ``kind`` derived from it (``derived_set``, with the
    statistics it needs read from the sample's dumps, and its ``options``); the directory appears whole or not at
    all."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for source in read_sets(source_dir):
            stats = {}
            for dump, names in needs(kind).items():
                stats |= read_dump(Path(dump_dirs[dump]) / f"{source['image_id']}.h5", names)[0]
            derived = derived_set(kind, source, stats, exclude_last_layer, **options)
            write_json(tmp / f"{source['image_id']}.json", derived)


def neurons_baseline(
    baseline: str, ours_dir: str, dump_dirs: Mapping[str, str], exclude_last_layer: bool, out_dir: str
) -> None:
    """Rule neurons_baseline: Schwettmann's (mean_p g), Pan's (mean_p O' · D[:, c]) or Dai et al.'s (Σ_p IG)
    top-|N_k| neurons of every sample of k, never from the last layer when ``exclude_last_layer``, like ours."""
    _derive(baseline, ours_dir, dump_dirs, exclude_last_layer, out_dir)


def neurons_ig_dai(
    ours_dir: str, dump_dirs: Mapping[str, str], share_of_max: float, exclude_last_layer: bool, out_dir: str
) -> None:
    """Rule neurons_ig_dai: Dai et al.'s own selection of every sample of k, the units whose Σ_p IG exceeds
    ``share_of_max`` × the sample's largest (its own size, not |N_k|)."""
    _derive(IG_DAI, ours_dir, dump_dirs, exclude_last_layer, out_dir, ig_share=share_of_max)


def neurons_stage1(ours_dir: str, dump_dirs: Mapping[str, str], out_dir: str) -> None:
    """Rule neurons_stage1: the stage-1 control of every sample's set of ours (|N_k| random units of its C^k,
    recomputed from its activation dump)."""
    _derive(STAGE1, ours_dir, dump_dirs, False, out_dir)


def neurons_control(method: str, sets_dir: str, dump_dirs: Mapping[str, str], out_dir: str) -> None:
    """Rule neurons_control: the random control of every sample's set of ``method`` (its per-layer counts, units
    drawn at random)."""
    _derive(method + CONTROL, sets_dir, dump_dirs, False, out_dir)


SUMMARY_COLUMNS = [
    "method",
    "knowledge",
    "image_id",
    "size",
    "candidates",
    "activation_threshold",
    "gradcam_threshold",
    "layer_counts",
]


def neuron_summary(set_dirs: Sequence[str], out_tsv: str) -> None:
    """Rule neuron_summary: one row per (method, knowledge, sample): set size, candidates, thresholds, layers."""
    rows = []
    for d in set_dirs:
        for s in read_sets(d):
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
    write_tsv_rows(out_tsv, rows, SUMMARY_COLUMNS)
