"""Bad input through the workflow: one clear line naming the file, key or value, a non-zero exit, no partial output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kneurons.coco import image_records, load_coco
from kneurons.io import read_tsv_rows
from kneurons.samples import slug
from tests.helpers import kneurons_lines, snakemake


def overlay(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "noise:\n  levels: [-1, 80]\n",
            "config error at noise.levels.0: -1 is less than or equal to the minimum of 0",
        ),
        ("noise:\n  seeds: 0\n", "config error at noise.seeds: 0 is less than the minimum of 1"),
        ("samples:\n  per_knowledge: 0\n", "config error at samples.per_knowledge: 0 is less than the minimum of 1"),
        ("captioner:\n  steps: 0\n", "config error at captioner.steps: 0 is less than the minimum of 1"),
    ],
)
def test_schema_errors_stop_before_any_job(tmp_path, text, line):
    proc = snakemake(tmp_path, "-n", configs=(overlay(tmp_path, text),))
    assert proc.returncode != 0
    assert kneurons_lines(proc.stdout + proc.stderr) == [f"kneurons: {line}"]
    assert not (tmp_path / "results").exists()


def test_every_missing_path_is_one_line(tmp_path):
    text = (
        "data: {annotations: /nope/instances.json, images: /nope/val}\n"
        "model: {path: /nope/llava}\nmetrics: {bertscore_model: /nope/roberta-large}\n"
    )
    proc = snakemake(tmp_path, "-n", configs=(overlay(tmp_path, text),))
    assert proc.returncode != 0
    assert kneurons_lines(proc.stdout + proc.stderr) == [
        "kneurons: config error at data.annotations: file not found: /nope/instances.json",
        "kneurons: config error at data.images: directory not found: /nope/val",
        "kneurons: config error at model.path: directory not found: /nope/llava",
        "kneurons: config error at metrics.bertscore_model: directory not found: /nope/roberta-large",
    ]


@pytest.fixture
def coco(tmp_path, tiny_split, tiny_model_dir) -> dict:
    """A writable copy of the tiny COCO split, a config overlay pointing at it and the tiny model, and a target."""
    ann, images = tmp_path / "instances.json", tmp_path / "images"
    shutil.copy(tiny_split[0], ann)
    shutil.copytree(tiny_split[1], images)
    record = next(r for r in image_records(load_coco(ann), images) if r.annotations)
    k = record.annotations[0].category
    text = f"data: {{annotations: {ann}, images: {images}}}\nmodel: {{path: {tiny_model_dir}}}\nknowledge: ['{k}']\n"
    return {"ann": ann, "images": images, "k": k, "record": record, "config": overlay(tmp_path, text)}


def run_target(tmp_path: Path, coco: dict, target: str):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return work, snakemake(work, "--cores", "1", target, configs=(coco["config"],))


def assert_one_error(proc, rule: str, message: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in kneurons_lines(proc.stdout + proc.stderr) if " in rule " in ln]  # not the progress lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"kneurons: error in rule {rule}: ") and message in lines[0], lines[0]


def no_partial_output(work: Path, *outputs: str) -> None:
    for out in outputs:
        assert not (work / out).exists(), out
    assert not [p for p in (work / "results").rglob("*") if ".tmp" in p.name]


def test_malformed_annotation_file(tmp_path, coco):
    coco["ann"].write_text('{"images": [')
    work, proc = run_target(tmp_path, coco, "results/samples/knowledge.tsv")
    assert_one_error(proc, "knowledge", f"{coco['ann']}: not valid JSON")
    no_partial_output(work, "results/samples/knowledge.tsv")


def test_annotation_file_without_categories(tmp_path, coco):
    data = json.loads(coco["ann"].read_text())
    del data["categories"]
    coco["ann"].write_text(json.dumps(data))
    work, proc = run_target(tmp_path, coco, "results/samples/knowledge.tsv")
    assert_one_error(proc, "knowledge", f"{coco['ann']}: not a COCO instances file")
    no_partial_output(work, "results/samples/knowledge.tsv")


def test_unknown_knowledge(tmp_path, coco):
    coco["config"].write_text(coco["config"].read_text().replace(f"['{coco['k']}']", "[unicorn]"))
    work, proc = run_target(tmp_path, coco, "results/samples/knowledge.tsv")
    assert_one_error(proc, "knowledge", "knowledge 'unicorn' is not a category")
    no_partial_output(work, "results/samples/knowledge.tsv")


def _spoil_candidates(coco: dict) -> dict[int, str]:
    """Four candidate images of two targets (k and another category, now both in the config) spoiled four ways:
    missing, not an image, a JPEG cut to 40 % of its bytes, an annotated width one pixel off. Returns {image_id:
    the line the check must show}."""
    data = json.loads(coco["ann"].read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    holding: dict[str, list[int]] = {}
    for a in sorted(data["annotations"], key=lambda a: a["image_id"]):
        holding.setdefault(names[a["category_id"]], []).append(a["image_id"])
    first = [i for i in dict.fromkeys(holding[coco["k"]])][:2]
    other = next(n for n, ids in holding.items() if n != coco["k"] and len(set(ids) - set(first)) >= 2)
    ids = first + [i for i in dict.fromkeys(holding[other]) if i not in first][:2]
    coco["config"].write_text(coco["config"].read_text().replace(f"['{coco['k']}']", f"['{coco['k']}', '{other}']"))
    coco["targets"] = [coco["k"], other]
    info = {i["id"]: i for i in data["images"]}
    files = [coco["images"] / info[i]["file_name"] for i in ids]
    files[0].unlink()
    files[1].write_bytes(b"not a jpeg")
    files[2].write_bytes(files[2].read_bytes()[: len(files[2].read_bytes()) * 2 // 5])
    info[ids[3]]["width"] += 1
    coco["ann"].write_text(json.dumps(data))
    w, h = info[ids[3]]["width"], info[ids[3]]["height"]
    problems = [
        "image file not found",
        "image does not decode completely (cannot identify image file",
        "image does not decode completely (image file is truncated",
        f"the file is {w - 1}x{h} (width x height) but the annotations say {w}x{h}",
    ]
    return {i: f"{f} (image {i}): {p}" for i, f, p in zip(ids, files, problems, strict=True)}


def test_every_bad_image_is_named_at_once_before_any_model_job(tmp_path, coco):
    lines = _spoil_candidates(coco)
    k = slug(coco["k"])
    work, proc = run_target(tmp_path, coco, f"results/samples/{k}/captioned.tsv")
    shown = kneurons_lines(proc.stdout + proc.stderr)
    for line in lines.values():  # all four together, each naming the file, the id and what is wrong
        assert any(ln.startswith(f"kneurons: {line}") for ln in shown), (line, shown)
    assert_one_error(proc, "check_images", "4 bad image(s) among the ")
    no_partial_output(work, "results/samples/image_check.tsv", f"results/samples/{k}/candidates.tsv")
    assert not (work / f"results/samples/{k}/captioned.tsv").exists()  # no model job ran


def test_bad_images_can_be_skipped_with_the_reason_and_are_checked_once(tmp_path, coco):
    lines = _spoil_candidates(coco)
    coco["config"].write_text(coco["config"].read_text() + "samples: {bad_images: skip, max_candidates: 8}\n")
    targets = [f"results/samples/{slug(t)}/selected.tsv" for t in coco["targets"]]
    work = tmp_path / "work"
    proc = snakemake(work, "--cores", "1", *targets, configs=(coco["config"],))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kneurons: 4 bad image(s) skipped (samples.bad_images: skip): their candidates are rejected" in (
        kneurons_lines(proc.stderr)
    )
    rows = {int(r["image_id"]): r for t in targets for r in read_tsv_rows(work / t)}
    for image_id, line in lines.items():
        assert rows[image_id]["status"] == "rejected"
        assert rows[image_id]["reason"].startswith("bad image: " + line.split(": ", 1)[1]), rows[image_id]
    checked = read_tsv_rows(work / "results/samples/image_check.tsv")
    assert len({r["image_id"] for r in checked}) == len(checked) >= 4  # each file once
    again = snakemake(work, "-n", *targets, configs=(coco["config"],))
    assert "check_images" not in again.stdout  # cached: a rerun does not check again


@pytest.mark.parametrize(
    ("box", "message"), [([5, 5, 0, 10], "has zero area"), ([40, 40, 30, 30], "lies more than 2 px outside the 48x48")]
)
def test_a_bad_box_skips_its_candidate_with_a_reason(tmp_path, coco, box, message):
    data = json.loads(coco["ann"].read_text())
    cat = next(c["id"] for c in data["categories"] if c["name"] == coco["k"])
    ann = next(a for a in data["annotations"] if a["image_id"] == coco["record"].id and a["category_id"] == cat)
    ann["bbox"] = box
    coco["ann"].write_text(json.dumps(data))
    work, proc = run_target(tmp_path, coco, f"results/samples/{slug(coco['k'])}/selected.tsv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {int(r["image_id"]): r for r in read_tsv_rows(work / f"results/samples/{slug(coco['k'])}/selected.tsv")}
    bad = rows[coco["record"].id]
    assert bad["status"] == "rejected" and bad["reason"].startswith(f"bad box: {coco['k']} box [x, y, w, h] = ")
    assert message in bad["reason"] and bad["caption"] == ""
    # the summary line on the console counts it
    assert any(ln.startswith(f"kneurons: {coco['k']}: ") and "bad box: 1" in ln for ln in kneurons_lines(proc.stderr))


def test_a_run_where_nothing_passes_ends_with_empty_tables_that_say_why(tmp_path, coco):
    coco["config"].write_text(coco["config"].read_text() + "generation: {max_new_tokens: 1}\n")  # no k in 1 word
    work, proc = run_target(tmp_path, coco, "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = kneurons_lines(proc.stderr)
    assert f"kneurons: 1 knowledge target(s): {coco['k']}" in lines
    summary = next(ln for ln in lines if ln.startswith(f"kneurons: {coco['k']}: 0 sample(s) from "))
    assert "(not selected: k not in caption: " in summary and summary.endswith(": no sample, target left out")
    note = f"- {coco['k']}: no sample passed the constraints (k not in caption: "
    for table in ("table2.md", "table3.md"):
        assert note in (work / "results/tables" / table).read_text(), table
    assert "No neuron set" in (work / "results/tables/layer_distribution.md").read_text()
    assert "No neuron set was perturbed" in (work / "results/tables/dose_response.md").read_text()
    for table in ("examples.md", "decoded_neurons.md"):  # header-only tables no more: they say why
        text = (work / "results/tables" / table).read_text()
        assert "No knowledge target has a sample in D (k not in caption: " in text, (table, text)
    for png in ("layer_distribution.png", "dose_response.png"):
        assert (work / "results/figures" / png).read_bytes()[:4] == b"\x89PNG"


def _edit(coco: dict, change) -> None:
    data = json.loads(coco["ann"].read_text())
    change(data)
    coco["ann"].write_text(json.dumps(data))


def test_duplicate_image_ids_name_the_id_and_both_files(tmp_path, coco):
    def duplicate(data):
        first = data["images"][0]
        data["images"].append(first | {"file_name": "other.jpg"})

    _edit(coco, duplicate)
    first = json.loads(coco["ann"].read_text())["images"][0]
    work, proc = run_target(tmp_path, coco, "results/samples/knowledge.tsv")
    assert_one_error(proc, "knowledge", f"image id {first['id']} is used twice ({first['file_name']} and other.jpg)")
    no_partial_output(work, "results/samples/knowledge.tsv")


@pytest.mark.parametrize("name", ["crème brûlée", "teddy_bear"])
def test_any_category_name_gets_its_candidates(tmp_path, coco, name):
    def rename(data):
        next(c for c in data["categories"] if c["name"] == coco["k"])["name"] = name

    _edit(coco, rename)
    coco["config"].write_text(coco["config"].read_text().replace(f"['{coco['k']}']", f"['{name}']"))
    work, proc = run_target(tmp_path, coco, f"results/samples/{slug(name)}/candidates.tsv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_tsv_rows(work / f"results/samples/{slug(name)}/candidates.tsv")
    assert rows and all(r["knowledge"] == name for r in rows)
    knowledge = read_tsv_rows(work / "results/samples/knowledge.tsv")
    assert [(r["name"], r["slug"]) for r in knowledge] == [(name, slug(name))]


def test_auto_knowledge_on_annotations_without_objects(tmp_path, coco):
    _edit(coco, lambda data: data.update(annotations=[]))
    coco["config"].write_text(coco["config"].read_text().replace(f"knowledge: ['{coco['k']}']", "knowledge: auto"))
    work, proc = run_target(tmp_path, coco, "results/samples/knowledge.tsv")
    assert_one_error(proc, "knowledge", "knowledge auto found no category with an annotated object")
    no_partial_output(work, "results/samples/knowledge.tsv")


def test_incomplete_model_directory(tmp_path, coco, tiny_model_dir):
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    coco["config"].write_text(coco["config"].read_text().replace(str(tiny_model_dir), str(broken)))
    k = slug(coco["k"])
    work, proc = run_target(tmp_path, coco, f"results/samples/{k}/captioned.tsv")
    assert_one_error(proc, "caption_candidates", f"{broken}: incomplete model directory, missing weights")
    no_partial_output(work, f"results/samples/{k}/captioned.tsv")


def test_a_qformer_model_is_refused_before_any_job(tmp_path, coco, tiny_model_dir):
    qformer = tmp_path / "blip2"
    shutil.copytree(tiny_model_dir, qformer)
    config = json.loads((qformer / "config.json").read_text())
    (qformer / "config.json").write_text(json.dumps(config | {"model_type": "blip-2"}))
    coco["config"].write_text(coco["config"].read_text().replace(str(tiny_model_dir), str(qformer)))
    work, proc = run_target(tmp_path, coco, "results/samples/knowledge.tsv")
    assert proc.returncode != 0
    assert kneurons_lines(proc.stdout + proc.stderr) == [
        f"kneurons: {qformer}/config.json: model_type 'blip-2' (BLIP-2 / InstructBLIP (Q-Former)) is not supported: "
        "its image enters the decoder as Q-Former queries, not as per-patch token positions, so per-position "
        "activations (stage 1), the image-position perturbations and the heatmaps are undefined"
    ]
    assert not (work / "results").exists()
