"""Bad input through the workflow: one clear line naming the file, key or value, a non-zero exit, no partial output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kneurons.coco import image_records, load_coco
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
    lines = kneurons_lines(proc.stdout + proc.stderr)
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


@pytest.mark.parametrize(
    ("damage", "message"), [("missing", "image file not found"), ("garbage", "image file is not a readable image")]
)
def test_missing_or_unreadable_image(tmp_path, coco, damage, message):
    path = coco["record"].path
    path.unlink() if damage == "missing" else path.write_bytes(b"not a jpeg")
    slug = coco["k"].replace(" ", "_")
    work, proc = run_target(tmp_path, coco, f"results/samples/{slug}/candidates.tsv")
    assert_one_error(proc, "inpaint", f"{path}: {message}")
    no_partial_output(work, f"results/samples/{slug}/candidates.tsv", f"results/inpainted/{slug}")


@pytest.mark.parametrize(
    ("box", "message"), [([5, 5, 0, 10], "has zero area"), ([40, 40, 30, 30], "lies outside the 48x48 image")]
)
def test_bad_box(tmp_path, coco, box, message):
    data = json.loads(coco["ann"].read_text())
    cat = next(c["id"] for c in data["categories"] if c["name"] == coco["k"])
    ann = next(a for a in data["annotations"] if a["image_id"] == coco["record"].id and a["category_id"] == cat)
    ann["bbox"] = box
    coco["ann"].write_text(json.dumps(data))
    slug = coco["k"].replace(" ", "_")
    work, proc = run_target(tmp_path, coco, f"results/samples/{slug}/candidates.tsv")
    assert_one_error(proc, "inpaint", f"(image {coco['record'].id}): {coco['k']} box [x, y, w, h] = ")
    assert message in kneurons_lines(proc.stderr)[0]
    no_partial_output(work, f"results/samples/{slug}/candidates.tsv", f"results/inpainted/{slug}")


def test_incomplete_model_directory(tmp_path, coco, tiny_model_dir):
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    coco["config"].write_text(coco["config"].read_text().replace(str(tiny_model_dir), str(broken)))
    slug = coco["k"].replace(" ", "_")
    work, proc = run_target(tmp_path, coco, f"results/samples/{slug}/captioned.tsv")
    assert_one_error(proc, "caption_candidates", f"{broken}: incomplete model directory, missing weights")
    no_partial_output(work, f"results/samples/{slug}/captioned.tsv")
