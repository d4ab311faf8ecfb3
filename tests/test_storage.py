"""Dump storage modes (full / compact) give the same neuron sets; truncated dumps are found; OOM-halving batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kneurons.dumpstats import activation_record, gradcam_record, traces
from kneurons.generation import adaptive_batches
from kneurons.h5io import write_dump
from kneurons.preflight import DRY, discard_dump_dirs, incomplete_dumps
from kneurons.rules.neurons import neurons_baseline, neurons_ours

L, P, D = 3, 16, 40


def sample(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    orig = rng.normal(size=(L, P, D)).astype(np.float32)
    inp = orig - rng.exponential(0.2, size=(L, P, D)).astype(np.float32) * (rng.random((L, 1, D)) < 0.1)
    g = rng.normal(scale=1e-3, size=(L, P, D)).astype(np.float32)
    return orig, inp, g, rng.normal(size=(L, D)).astype(np.float32)


def write_dumps(root, mode: str) -> tuple:
    acts, cams = root / f"acts_{mode}", root / f"cams_{mode}"
    acts.mkdir()
    cams.mkdir()
    for image_id in (3, 7):
        orig, inp, g, ul = sample(image_id)
        attrs = {"knowledge": "bear", "image_id": image_id}
        write_dump(acts / f"{image_id}.h5", activation_record(orig, inp, mode, trace_share=0.05), attrs)
        write_dump(cams / f"{image_id}.h5", gradcam_record(g, ul, mode, g * orig), attrs)
    return acts, cams


def test_compact_and_full_dumps_give_identical_neuron_sets(tmp_path):
    sets = {}
    for mode in ("full", "compact"):
        acts, cams = write_dumps(tmp_path, mode)
        ours = tmp_path / f"ours_{mode}"
        dumps = {"activations": str(acts), "gradcam": str(cams)}
        neurons_ours(dumps, {"activation": "q0.9", "gradcam": "q0.5"}, False, str(ours))
        sets[mode] = {"ours": [json.loads(p.read_text()) for p in sorted(ours.glob("*.json"))]}
        for method in ("schwettmann", "pan", "ig"):
            out = tmp_path / f"{method}_{mode}"
            neurons_baseline(method, str(ours), dumps, False, str(out))
            sets[mode][method] = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert sets["full"] == sets["compact"]
    assert all(s["size"] > 0 for s in sets["full"]["ours"])
    full = sum(p.stat().st_size for p in tmp_path.glob("*_full/*.h5"))
    compact = sum(p.stat().st_size for p in tmp_path.glob("*_compact/*.h5"))
    assert compact < full / 2


def test_compact_traces_hold_the_strongest_neurons():
    orig, inp, _, _ = sample(1)
    full = activation_record(orig, inp, "full", 0.05)
    compact = activation_record(orig, inp, "compact", 0.05)
    for key in ("v_max", "o_mean", "o_std"):
        np.testing.assert_array_equal(full[key], compact[key])
    n = round(0.05 * L * D)
    assert compact["traces"].shape == (n, P) and compact["traces"].dtype == np.float16
    strongest = np.unravel_index(np.argmax(full["v_max"]), full["v_max"].shape)
    weakest = np.unravel_index(np.argmin(full["v_max"]), full["v_max"].shape)
    got_full, got_compact = traces(full, [strongest, weakest]), traces(compact, [strongest, weakest])
    np.testing.assert_array_equal(got_compact[0], got_full[0])
    assert got_compact[1] is None
    with pytest.raises(ValueError, match=r"dumps\.mode"):
        activation_record(orig, inp, "tiny", 0.05)


def test_truncated_dump_found_and_its_directory_discarded(tmp_path):
    acts, _ = write_dumps(tmp_path, "full")
    assert incomplete_dumps([acts]) == []
    bad = acts / "7.h5"
    bad.write_bytes(bad.read_bytes()[:2048])
    assert incomplete_dumps([acts]) == [bad]
    assert discard_dump_dirs([bad], dry_run=True) == [f"{bad}: truncated or incomplete HDF5 dump; {acts}: {DRY}"]
    assert bad.exists()
    lines = discard_dump_dirs([bad])
    assert lines == [f"{bad}: truncated or incomplete HDF5 dump; {acts}: recomputed"]
    assert not acts.exists()


def test_out_of_memory_halves_the_batch_and_keeps_every_row():
    calls = []

    def run(sl: slice) -> list[int]:
        calls.append((sl.start, sl.stop))
        if sl.stop - sl.start > 5:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return list(range(sl.start, sl.stop))

    assert adaptive_batches(11, 16, run) == list(range(11))
    assert calls == [(0, 11), (0, 8), (0, 4), (4, 8), (8, 11)]
    calls.clear()
    assert adaptive_batches(3, "auto", run) == [0, 1, 2] and calls == [(0, 3)]

    # "auto" (the paper config's) starts at 512 rows, then halves on out-of-memory like a fixed size
    calls.clear()
    assert adaptive_batches(1300, "auto", lambda sl: calls.append((sl.start, sl.stop)) or [sl.start]) == [0, 512, 1024]
    assert calls == [(0, 512), (512, 1024), (1024, 1300)]
    calls.clear()

    def fits_300(sl: slice) -> list[int]:
        calls.append((sl.start, sl.stop))
        if sl.stop - sl.start > 300:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [sl.start]

    assert adaptive_batches(600, "auto", fits_300) == [0, 256, 512]
    assert calls == [(0, 512), (0, 256), (256, 512), (512, 600)]

    def never_fits(sl: slice) -> list[int]:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        adaptive_batches(4, 2, never_fits)
