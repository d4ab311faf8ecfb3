"""End to end: the Snakemake DAG on the small test config, from synthetic data to neuron sets."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from kneurons.coco import load_coco
from kneurons.io import read_tsv_rows
from kneurons.names import EDIT_KINDS, EDIT_METHODS, METHODS, PAIRS, SET_KINDS, SHADOWED
from kneurons.synth.scenes import annotations_digest
from tests.helpers import DEFAULT_CONFIG, TEST_CONFIG, job_counts, snakemake


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
    # the training record: the merged config's captioner (less the switch) and synth sections, the training split
    default, test = (yaml.safe_load(c.read_text()) for c in (DEFAULT_CONFIG, TEST_CONFIG))
    record = ev["training"]["provenance"]
    assert record["captioner"] == {k: v for k, v in (default["captioner"] | test["captioner"]).items() if k != "train"}
    assert record["synth"] == default["synth"] | test["synth"]
    split = json.loads((run_dir / "results/synth/annotations/instances_train.json").read_text())
    assert record["train_annotations_sha256"] == annotations_digest(split)
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
            assert f["ig"].shape == (shape[0], shape[2]) and np.isfinite(f["ig"][()]).all() and f["ig"][()].any()
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
    assert len(summary) == (len(SET_KINDS) + 1) * len(chosen)  # and Dai et al.'s own selection, ig_dai


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


def test_editing_judges_every_method_on_images_it_was_never_found_on(run_dir, samples):
    split = read_tsv_rows(run_dir / "results/edits/heldout.tsv")
    in_d = {(r["knowledge"], r["image_id"]) for r in samples if r["status"] == "selected"}
    d_images = {i for _, i in in_d}
    assert {(r["knowledge"], r["image_id"]) for r in split if r["role"] == "discovery"} == in_d
    judged = [r for r in split if r["role"] in ("heldout", "locality")]
    assert judged and not any(r["image_id"] in d_images for r in judged)  # no image of D is ever judged
    assert all(r["reason"] for r in split)
    for r in judged:  # each image is where its reason says
        has_k = r["knowledge"] in r["objects"].split(",")
        assert has_k == (r["role"] == "heldout"), r
    targets = {r["knowledge"] for r in split}
    for kind in EDIT_KINDS:
        for k in targets:
            nset = json.loads((run_dir / f"results/edits/sets/{kind}/{k.replace(' ', '_')}.json").read_text())
            if kind.endswith("_control"):
                shadowed = json.loads(
                    (run_dir / f"results/edits/sets/{nset['control_of']}/{k.replace(' ', '_')}.json").read_text()
                )
                assert len(nset["draws"]) == 2 and all(len(d) == shadowed["size"] for d in nset["draws"])
                drawn = {tuple(u[:2]) for d in nset["draws"] for u in d}
                assert not drawn & {tuple(u[:2]) for u in shadowed["neurons"]}
            else:
                assert nset["share"] == 0.5 and sorted(nset["samples"]) == sorted(int(i) for kk, i in in_d if kk == k)
    rows = read_tsv_rows(run_dir / "results/tables/editing.csv", delimiter=",")
    edits = {("erase", "0.0"), ("ablate_hook", "0.0"), ("amplify", "3.0"), ("rewrite", "1.0")}
    overall = {(r["method"], r["op"], r["strength"]): r for r in rows if r["knowledge"] == "all"}
    assert {(o, s) for _, o, s in overall} == edits
    edited = {m for m, _, _ in overall}
    assert {"none", *SET_KINDS} <= edited  # every per-sample method (its sets hold |N_k| units: never empty)
    for method in edited:
        for op, strength in edits:
            r = overall[(method, op, strength)]
            assert 0.0 <= float(r["locality"]) <= 1.0, r
    for method in SHADOWED:
        r = overall[(method, "erase", "0.0")]
        if float(r["units"]) > 0:
            assert float(r["defficacy_lo"]) <= float(r["defficacy"]) <= float(r["defficacy_hi"])
    pairs = read_tsv_rows(run_dir / "results/tables/editing_pairwise.csv", delimiter=",")
    assert {r["verdict"] for r in pairs} <= {
        f"{m} {w}" for m in EDIT_METHODS for w in ("more specific", "amplifies k more", "rewrites more")
    } | {"not separable"}
    assert "### erase" in (run_dir / "results/tables/editing.md").read_text()
    assert (run_dir / "results/figures/editing.png").read_bytes()[:4] == b"\x89PNG"


def test_a_change_of_p_reruns_only_the_editing_rules(run_dir, tmp_path):
    override = tmp_path / "share.yaml"
    override.write_text("editing:\n  share: 1.0\n")
    proc = snakemake(run_dir, "-n", "--cores", "1", configs=(TEST_CONFIG, override))
    assert proc.returncode == 0, proc.stderr[-2000:]
    targets = len({r["knowledge"] for r in read_tsv_rows(run_dir / "results/edits/heldout.tsv")})
    assert job_counts(proc.stdout + proc.stderr) == {"edit_sets": targets, "edit_eval": targets, "editing": 1, "all": 1}


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
    for message in ("System Message", "Undefined substitution"):  # docutils' complaints, on the page and in the log
        assert message not in html and message not in proc.stderr
    # every figure's caption, rendered into the report
    for caption in sorted((Path(__file__).parents[1] / "report").glob("*.rst")):
        assert " ".join(caption.read_text().split()[:4]) in html, caption.name


def chromium() -> str:
    """Debian's Chromium, installed from the distribution's packages where it is missing (as root, like CI)."""
    if not shutil.which("chromium"):
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
    return shutil.which("chromium") or "chromium"


def test_the_report_renders_in_headless_chromium(run_dir):
    """The report is a JavaScript page: Chromium runs it and the rendered page lists the categories and the
    workflow's description, with no docutils message."""
    report = run_dir / "results/report.html"
    if not report.exists():
        assert snakemake(run_dir, "--report", "results/report.html").returncode == 0
    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom"]  # fmt: skip
        proc = subprocess.run([chromium(), *flags, report.as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", proc.stdout, flags=re.S)
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page[page.find("<body") :])))
    for category in ("Captioner", "Figures", "Neurons", "Samples", "Tables"):
        assert category in text, category
    assert "Knowledge neurons of a LLaVA-family model" in text and "|N_k| random candidates" in text
    assert "System Message" not in text


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
        "neurons_baseline": 3,
        "neurons_ig_dai": 1,
        "neurons_stage1": 1,
        "neurons_control": 5,
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
        "edit_sets": 1,
        "edit_eval": 1,
        "editing": 1,
        "all": 1,
    }
    assert f"k={name.replace(' ', '_')}" in proc.stdout + proc.stderr
