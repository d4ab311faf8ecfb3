"""End to end: the Snakemake DAG on the small test config, from synthetic data to neuron sets."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import yaml

from kneurons.coco import load_coco
from kneurons.io import read_tsv_rows
from kneurons.metrics import PAIRS
from kneurons.neuronsets import METHODS, SET_KINDS, SHADOWED
from kneurons.preflight import discard_interrupted, interrupted_outputs
from tests.helpers import REPO, TEST_CONFIG, assert_same_outputs, job_counts, snakemake, stop_point_env


@pytest.fixture(scope="module")
def samples(run_dir) -> list[dict]:
    return read_tsv_rows(run_dir / "results/samples/selected.tsv")


def test_captioner_trained_and_evaluated(run_dir):
    ev = json.loads((run_dir / "results/model/eval.json").read_text())
    for key in ("precision", "recall", "constraint_pass_share", "ablated_recall"):
        assert 0.0 <= ev[key] <= 1.0
    # the run went on only because the captioner met the test config's bounds; eval.json shows each
    bounds = yaml.safe_load(TEST_CONFIG.read_text())["captioner_quality"]
    assert {k: c["bound"] for k, c in ev["quality"].items()} == bounds
    assert all(c["met"] and c["value"] == ev[k] for k, c in ev["quality"].items())
    assert ev["ablation_recall_ratio"] == pytest.approx(ev["ablated_recall"] / ev["recall"], abs=1e-3)
    assert ev["ablation_recall_ratio"] <= bounds["ablation_recall_ratio"] < 1
    assert ev["held_out_images"] == 40
    assert ev["training"]["settings"]["steps"] > 0
    assert len(load_coco(run_dir / "results/synth/annotations/instances_val.json").getImgIds()) == 40


def test_training_shows_its_progress_on_the_console(run_dir):
    steps = yaml.safe_load(TEST_CONFIG.read_text())["captioner"]["steps"]
    shown = [ln for ln in (run_dir / "console.txt").read_text().splitlines() if "training the captioner: step" in ln]
    assert shown[0].startswith("kneurons: training the captioner: step 1/") and f"step {steps}/{steps}," in shown[-1]
    assert len(shown) == len(range(0, steps, 50)) + 1 and all(" s left" in ln for ln in shown)


def test_sample_table_explains_every_candidate(samples):
    assert {r["knowledge"] for r in samples} == {"bear", "pizza"}
    assert any(r["status"] == "selected" for r in samples), "no sample passed the constraints"
    for r in samples:
        assert r["status"] in {"selected", "rejected", "pending"}
        assert (r["status"] == "selected") == (r["reason"] == "")


def test_every_selected_sample_has_dumps_and_nonempty_sets(run_dir, samples):
    arch = yaml.safe_load(TEST_CONFIG.read_text())["captioner"]
    shape = (arch["layers"], 64, arch["intermediate"])  # (L, P, d_ff); P = (48 / 6)²
    chosen = [r for r in samples if r["status"] == "selected"]
    for r in chosen:
        k, image_id = r["knowledge"].replace(" ", "_"), r["image_id"]
        with h5py.File(run_dir / f"results/activations/{k}/{image_id}.h5") as f:
            assert f["original"].dtype.name == "float16" and f["original"].shape == shape
            assert f["original"].chunks == (1, *shape[1:]) and f.attrs["complete"]
            assert f.attrs["prompt"] == "<image>The image shows a" and f.attrs["mode"] == "full"
            assert f["v_max"].shape == (shape[0], shape[2])
        with h5py.File(run_dir / f"results/gradcam/{k}/{image_id}.h5") as f:
            assert f["gradcam"].dtype.name == "float32" and f["gradcam"].shape == shape
            assert f.attrs["token"] == r["knowledge"].split()[0]
        ours = json.loads((run_dir / f"results/neurons/ours/{k}/{image_id}.json").read_text())
        assert ours["size"] > 0 and len(ours["neurons"]) == ours["size"] <= ours["candidates"]
        assert ours["thresholds"]["activation"] == "q0.95" and ours["excluded_layers"] == [1]
        for kind in SET_KINDS[1:]:
            b = json.loads((run_dir / f"results/neurons/{kind}/{k}/{image_id}.json").read_text())
            assert b["size"] == ours["size"] and b["layer_counts"][-1] == 0  # exclude_last_layer for every set
        for method in METHODS:
            s = json.loads((run_dir / f"results/neurons/{method}/{k}/{image_id}.json").read_text())
            c = json.loads((run_dir / f"results/neurons/{method}_control/{k}/{image_id}.json").read_text())
            assert c["layer_counts"] == s["layer_counts"]
    summary = read_tsv_rows(run_dir / "results/neurons/summary.tsv")
    assert len(summary) == len(SET_KINDS) * len(chosen)


def test_table2_covers_every_method_knowledge_and_level(run_dir, samples):
    rows = read_tsv_rows(run_dir / "results/tables/table2.csv", delimiter=",")
    levels = {str(float(v)) for v in yaml.safe_load(TEST_CONFIG.read_text())["noise"]["levels"]} | {"ablation"}
    with_samples = {r["knowledge"] for r in samples if r["status"] == "selected"}
    keys = {(r["method"], r["knowledge"], r["level"]) for r in rows}
    # the no-perturbation reference: D's clean captions, batched, are the selection's captions (each named k and
    # every other object, by selection), so S_se is 0 and S_re 1 exactly, unless batching changed a caption
    reference = [r for r in rows if r["method"] == "none"]
    assert {(r["knowledge"], r["level"]) for r in reference} == {("all", "none")} | {(k, "none") for k in with_samples}
    assert all(float(r["S_se"]) == 0.0 and float(r["S_re"]) == 1.0 for r in reference), reference
    for method in SET_KINDS:
        assert (method, "all", "all") in keys
        for k in with_samples:
            for level in levels:
                assert (method, k, level) in keys
    for r in rows:
        for m in ("S_se", "S_re", "S_mean", "S_hal"):
            assert 0.0 <= float(r[m]) <= 1.0
            assert float(r[f"{m}_lo"]) <= float(r[m]) + 1e-9 <= float(r[f"{m}_hi"]) + 2e-9
        for m in ("dlogp_own", "dlogp_other"):  # log p changes: 0 for the reference, finite for every set
            assert float(r[m]) == 0.0 if r["method"] == "none" else math.isfinite(float(r[m])), r
            assert float(r[f"{m}_lo"]) <= float(r[m]) + 1e-9 <= float(r[f"{m}_hi"]) + 2e-9
        has_control = r["method"] in SHADOWED
        margins = ("dS_se", "dS_re", "dS_mean", "ddlogp_own", "ddlogp_other")
        assert all(math.isnan(float(r[m])) != has_control for m in margins), r
    ablated = {r["method"]: float(r["dlogp_own"]) for r in rows if r["knowledge"] == "all" and r["level"] == "ablation"}
    assert ablated["ours"] < 0 and ablated["schwettmann"] < 0  # ablating a set lowers log p(k) on k's images
    md = (run_dir / "results/tables/table2.md").read_text()
    assert (
        "| level | method | sets | S_se | S_re | S_mean | S_hal | dlogp_own | dlogp_other | dS_se | dS_re | dS_mean "
        "| ddlogp_own | ddlogp_other |"
    ) in md
    assert "| none | none |" in md and "| ablation | ours |" in md
    scale = json.loads((run_dir / "results/perturb/noise_scale.json").read_text())
    assert scale["scale"] == "calibrated" and 0 < scale["reference_scale"] < 10


def test_restoration_covers_every_set_kind_beside_the_ceiling_and_the_floor(run_dir, samples):
    """Every set of k patched into every sample of k: one line per (set, sample) per kind; the bounds hold each
    sample's ceiling, floor and original; the floor is the inpainted caption (0 by selection) and the original
    names k (1 by selection); the table has every kind with its interval and each method's margin."""
    selected = [r for r in samples if r["status"] == "selected"]
    for k in sorted({r["knowledge"] for r in selected}):
        mine = {int(r["image_id"]): r for r in selected if r["knowledge"] == k}
        slug = k.replace(" ", "_")
        for kind in SET_KINDS:
            lines = [json.loads(ln) for ln in (run_dir / f"results/perturb/restore/{kind}/{slug}.jsonl").open()]
            sets = {int(p.stem) for p in (run_dir / f"results/neurons/{kind}/{slug}").glob("*.json")}
            assert {(ln["set"], ln["image_id"]) for ln in lines} == {(s, i) for s in sets for i in mine}, kind
            assert all(math.isfinite(ln["logp"]) for ln in lines)
        bounds = [json.loads(ln) for ln in (run_dir / f"results/perturb/restore/bounds/{slug}.jsonl").open()]
        by = {(b["method"], b["image_id"]): b for b in bounds}
        assert set(by) == {(m, i) for m in ("ceiling", "floor", "original") for i in mine}
        for i, row in mine.items():
            assert by[("floor", i)]["caption"] == row["inpainted_caption"] and not by[("floor", i)]["mentions_target"]
            assert by[("original", i)]["caption"] == row["caption"] and by[("original", i)]["mentions_target"]
            assert by[("original", i)]["logp"] > by[("floor", i)]["logp"]  # k's word: likelier with k in the image
    rows = read_tsv_rows(run_dir / "results/tables/restoration.csv", delimiter=",")
    overall = {r["method"]: r for r in rows if r["knowledge"] == "all"}
    assert set(overall) == {*SET_KINDS, "ceiling", "floor", "original"}
    assert float(overall["floor"]["S_rest"]) == 0.0 and float(overall["floor"]["gap_closed"]) == 0.0
    assert float(overall["original"]["S_rest"]) == 1.0 and float(overall["original"]["gap_closed"]) == 1.0
    for m in SHADOWED:
        assert math.isfinite(float(overall[m]["dS_rest"])) and math.isfinite(float(overall[m]["dgap_closed"]))
    assert "| ours_stage1 |" in (run_dir / "results/tables/restoration.md").read_text()
    assert (run_dir / "results/figures/restoration.png").read_bytes()[:4] == b"\x89PNG"


def test_pairwise_compares_the_methods_at_every_level(run_dir):
    rows = read_tsv_rows(run_dir / "results/tables/pairwise.csv", delimiter=",")
    levels = {str(float(v)) for v in yaml.safe_load(TEST_CONFIG.read_text())["noise"]["levels"]}
    overall = {(r["comparison"], r["level"]): r for r in rows if r["knowledge"] == "all"}
    for a, b in PAIRS:
        for level in [*levels, "all", "ablation"]:
            r = overall[(f"{a} − {b}", level)]
            assert float(r["S_mean_lo"]) <= float(r["S_mean"]) + 1e-9 <= float(r["S_mean_hi"]) + 2e-9
            assert r["verdict"] in (f"{a} more specific", f"{b} more specific", "not separable")
        assert math.isfinite(float(overall[(f"{a} − {b}", "restore")]["S_rest"]))
    md = (run_dir / "results/tables/pairwise.md").read_text()
    assert "| ablation | ours − schwettmann |" in md and "| restore | ours − ours_stage1 |" in md
    statement = (run_dir / "results/tables/dose_response.md").read_text()
    assert "ours − schwettmann" in statement and ("more specific" in statement or "not separable" in statement)


def test_table3_scores_every_method(run_dir):
    rows = read_tsv_rows(run_dir / "results/tables/table3.csv", delimiter=",")
    assert {r["method"] for r in rows if r["knowledge"] == "all"} == {*SET_KINDS, "none"}
    for r in rows:
        assert int(r["captions"]) > 0
        for m in ("BLEU", "ROUGE-1", "ROUGE-L", "BERTScore"):
            assert 0.0 <= float(r[m]) <= 1.0 + 1e-6


def test_every_job_hashes_strings_the_same_way(run_dir):
    # bert-score batches its deduplicated sentences in set order, so a random hash seed changed Table III's BERTScore
    # between two runs (in the ninth decimal): the Snakefile gives every job PYTHONHASHSEED=0, and each log says so.
    logs = sorted((run_dir / "results/logs").rglob("*.log"))
    assert len(logs) > 10
    for log in logs:
        assert "PYTHONHASHSEED=0" in log.read_text(), log


def test_report_builds(run_dir):
    proc = snakemake(run_dir, "--report", "results/report.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (run_dir / "results/report.html").read_text(errors="replace")
    for name in ("table2.csv", "table3.csv", "examples.md", "decoded_neurons.md", "layer_distribution.png",
                 "dose_response.png", "layer_distribution.md"):  # fmt: skip
        assert name in html, name
    assert "heatmaps" in html


def test_figures_and_example_tables(run_dir, samples):
    with_samples = sorted({r["knowledge"] for r in samples if r["status"] == "selected"})
    for k in with_samples:
        assert (run_dir / f"results/figures/heatmaps/{k.replace(' ', '_')}.png").read_bytes()[:4] == b"\x89PNG"
    dist = read_tsv_rows(run_dir / "results/tables/layer_distribution.csv", delimiter=",")
    summary = read_tsv_rows(run_dir / "results/neurons/summary.tsv")
    for method in SET_KINDS:
        counted = sum(int(r["neurons"]) for r in dist if r["method"] == method)
        assert counted == sum(int(r["size"]) for r in summary if r["method"] == method)
    decoded = read_tsv_rows(run_dir / "results/tables/decoded_neurons.csv", delimiter=",")
    assert len(decoded) == sum(int(r["size"]) for r in summary)
    assert all(len(r["tokens"].split()) >= 5 for r in decoded)
    examples = read_tsv_rows(run_dir / "results/tables/examples.csv", delimiter=",")
    assert [r["knowledge"] for r in examples] == with_samples
    assert all(r[m] for r in examples for m in ("original", *SET_KINDS))
    statement = (run_dir / "results/tables/dose_response.md").read_text()
    assert "by perturbation: " in statement and all(f"{m} " in statement.split("by perturbation: ")[1] for m in METHODS)
    assert (run_dir / "results/figures/dose_response.png").read_bytes()[:4] == b"\x89PNG"


def test_threshold_change_reruns_only_that_target(run_dir, samples, tmp_path):
    proc = snakemake(run_dir, "-n", "--cores", "1")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    name = next(r["knowledge"] for r in samples if r["status"] == "selected")
    override = tmp_path / "threshold.yaml"
    override.write_text(f"thresholds:\n  knowledge:\n    {name}: {{activation: 0.5, gradcam: 0.0}}\n")
    proc = snakemake(run_dir, "-n", "--cores", "1", configs=(TEST_CONFIG, override))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert job_counts(proc.stdout + proc.stderr) == {
        "neurons_ours": 1,
        "neurons_baseline": 2,
        "neurons_stage1": 1,
        "neurons_control": 4,
        "neuron_summary": 1,
        "layer_distribution": 1,
        "decoded_neurons": 1,
        "heatmaps": 1,
        "perturb": 1,
        "examples": 1,
        "table2": 1,
        "table3": 1,
        "restoration": 1,
        "pairwise": 1,
        "dose_response": 1,
        "all": 1,
    }
    assert f"k={name.replace(' ', '_')}" in proc.stdout + proc.stderr


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def _kill_when(workdir: Path, ready, stop_at: str = "", timeout: float = 900) -> None:
    """Start a run and SIGKILL it (snakemake and every job process under it) as soon as ``ready()`` holds.

    The run gets a process group of its own and the whole group is killed at once (a power cut): killing the
    processes one by one lets snakemake start a job between the listing and its own kill, and that orphan
    writes into the next run. ``stop_at`` (a script name) makes that rule's jobs stop at their first rename
    (tests/stop_point)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(REPO / "config/config.yaml"), str(TEST_CONFIG), "--cores", "2", "--rerun-incomplete"]
    env = stop_point_env(stop_at, workdir / "stopped")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env, start_new_session=True
    )
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the kill point"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while _group_members(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _group_members(proc.pid), "a process of the killed run is still alive"


def _exists(workdir: Path, pattern: str, text: str = "") -> bool:
    return any(text in p.read_text(errors="replace") if text else True for p in workdir.glob(pattern) if p.is_file())


def _snakemake_records(workdir: Path, kind: str) -> set[str]:
    """The outputs Snakemake keeps records of under ``.snakemake/{kind}`` (metadata: jobs that finished;
    incomplete: jobs that started and did not finish), each a file named by its path in URL-safe base64."""
    root = workdir / ".snakemake" / kind
    names = ["".join(part.lstrip("@") for part in p.relative_to(root).parts) for p in root.rglob("*") if p.is_file()]
    return {base64.urlsafe_b64decode(n).decode() for n in names if n != "migration_underway"}


def _finished(workdir: Path) -> dict[str, tuple[int, int]]:
    """Every output of a job that had finished when the run was killed (a record, no incomplete marker), with its
    inode and mtime: every write replaces a file or directory by renaming a new one, so a rerun changes both."""
    done = _snakemake_records(workdir, "metadata") - _snakemake_records(workdir, "incomplete")
    return {rel: ((st := (workdir / rel).stat()).st_ino, st.st_mtime_ns) for rel in done if (workdir / rel).exists()}


def test_outputs_of_jobs_a_killed_run_never_recorded_are_found_from_snakemakes_own_markers(tmp_path, monkeypatch):
    # Real markers: a two-job workflow killed while both jobs sleep after writing their outputs (one path long
    # enough for Snakemake to split its marker's name into folders).
    long = "results/" + "/".join(["a_rather_long_folder_name_for_the_marker"] * 6) + "/x.txt"
    (tmp_path / "Snakefile").write_text(
        f"rule all:\n    input: 'results/short.txt', '{long}'\n"
        "rule write:\n    output: '{name}.txt'\n    shell: 'echo done > {output}; sleep {config[sleep]}'\n"
    )
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--config"]
    proc = subprocess.Popen([*cmd, "sleep=600"], cwd=tmp_path, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not all((tmp_path / p).exists() for p in ("results/short.txt", long)) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert subprocess.run([*cmd, "sleep=0", "--unlock"], cwd=tmp_path).returncode == 0
    refused = subprocess.run([*cmd, "sleep=0"], cwd=tmp_path, capture_output=True, text=True)
    assert "IncompleteFilesException" in refused.stderr  # Snakemake itself holds both outputs unfinished

    monkeypatch.chdir(tmp_path)
    found = interrupted_outputs()
    assert sorted(map(str, found)) == sorted(["results/short.txt", long])
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("")  # a running instance's: none of this run's
    assert interrupted_outputs() == []
    (tmp_path / ".snakemake/locks/0.input.lock").unlink()
    assert discard_interrupted(found, dry_run=True)[0].endswith("a run (not a dry run) recomputes it")
    assert all(p.exists() for p in found)
    lines = discard_interrupted(found)
    assert lines[0].endswith("never recorded as finished; recomputed") and len(lines) == 2
    assert not any(p.exists() for p in found)
    rerun = subprocess.run([*cmd, "sleep=0"], cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert interrupted_outputs() == [] and all(p.exists() for p in found)


def test_sigkill_at_three_points_then_resume_reruns_only_unfinished_jobs_and_gives_identical_results(run_dir, tmp_path):
    work = tmp_path / "killed"
    work.mkdir()
    stopped = work / "stopped"  # written by the job tests/stop_point stops (its temporary, then its output)
    kill_points = [
        (lambda: _exists(work, "results/logs/train_captioner.log", "step 51/"), ""),  # training under way
        (stopped.exists, "dumps"),  # a dump job inside its write: one HDF5 file of its temporary renamed
        (stopped.exists, "perturb"),  # a perturbation job with its whole temporary written, before the rename
    ]
    finished: dict[str, tuple[int, int]] = {}
    for ready, stop_at in kill_points:
        _kill_when(work, ready, stop_at)
        assert snakemake(work, "--unlock").returncode == 0
        if stop_at:
            temporary, _ = stopped.read_text().split()
            assert (work / temporary).exists(), "the stopped job left no temporary"  # relative to the run's directory
            stopped.unlink()
        finished |= _finished(work)
    assert "results/model/captioner" in finished and any(k.startswith("results/activations/") for k in finished)
    proc = snakemake(work, "--cores", "2", "--rerun-incomplete")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not _snakemake_records(work, "incomplete"), "the resumed run left jobs marked incomplete"
    assert not [p for p in (work / "results").rglob("*") if ".tmp" in p.name], "temporary files left behind"
    after = _finished(work)
    rerun = [rel for rel, stamp in finished.items() if after.get(rel) != stamp]
    assert not rerun, f"finished jobs rerun after a kill: {rerun}"
    assert assert_same_outputs(run_dir, work) > 100

    # An output whose job a killed run never recorded as finished (Snakemake's marker, as Snakemake names it) is
    # listed by a dry run and left in place, then recomputed by a run; so is a dump truncated afterwards (a bad
    # disk, a partial copy), found before any job.
    dump = next((work / "results/activations").glob("*/*.h5"))
    gradcam = Path("results/gradcam") / dump.parent.name
    marker = work / ".snakemake/incomplete" / base64.urlsafe_b64encode(str(gradcam).encode()).decode()
    marker.write_text(json.dumps({"external_jobid": None}))
    target = f"results/neurons/ours/{dump.parent.name}"  # its target's dumps and the sets made from them
    dry = snakemake(work, "-n", str(dump.parent.relative_to(work)), target)
    assert f"{gradcam}: left by a job that an interrupted run never recorded as finished; a run (not" in dry.stderr
    assert (work / gradcam).is_dir() and marker.exists()
    dump.write_bytes(dump.read_bytes()[:4096])
    proc = snakemake(work, "--cores", "2", str(dump.parent.relative_to(work)), target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{dump.relative_to(work)}: truncated or incomplete HDF5 dump" in proc.stderr
    assert f"{gradcam}: left by a job that an interrupted run never recorded as finished; recomputed" in proc.stderr
    assert job_counts(proc.stdout + proc.stderr) == {"dumps": 1, "neurons_ours": 1}
    assert not _snakemake_records(work, "incomplete")
    for path in [dump, *(work / gradcam).iterdir(), *(work / target).iterdir()]:
        assert path.read_bytes() == (run_dir / path.relative_to(work)).read_bytes()
