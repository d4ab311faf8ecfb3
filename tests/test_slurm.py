"""The workflow through the SLURM profile on a real one-node SLURM cluster (munge, slurmdbd on MariaDB,
slurmctld, slurmd) that tests/slurm/start_cluster.sh installs and starts on this machine (as root, like CI):
every job but `all` runs as a SLURM job, Ctrl-C cancels the running jobs (scancel) and the run resumes, and every
output (tables, neuron sets, HDF5 dumps, weights) equals the local run's byte for byte: two runs of the same config
from scratch, on two executors, give the same files."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

from tests.helpers import DEFAULT_CONFIG, REPO, TEST_CONFIG, assert_same_outputs, snakemake, stop_point_env

PROFILE = REPO / "profiles" / "slurm"
_DEFAULTS, _TEST = (yaml.safe_load(c.read_text()) for c in (DEFAULT_CONFIG, TEST_CONFIG))
LOCAL_THREADS = _TEST.get("threads", _DEFAULTS["threads"])  # what the local run's model jobs use
TRAIN_THREADS = (_DEFAULTS["captioner"] | _TEST["captioner"])["threads"]  # and its training
MODEL_RULES = ("train_captioner", "evaluate_captioner", "caption_candidates", "dumps",
               "reference_captions", "perturb", "decoded_neurons", "table3", "edit_eval", "editing")  # fmt: skip


# The plugin's wait between status checks grows by 10 s per check that finds no job finished (up to 180 s: sized
# for a shared cluster); on this one-node cluster, whose jobs take seconds, the resumed run (which does the work)
# holds it at 2 s (tests/stop_point/sitecustomize.py). Not the run that gets the Ctrl-C: the plugin takes the jobs
# out of its list of active jobs while it checks them, so a Ctrl-C during a check cancels none of them, and checks
# every 2 s make that likely (seen once in a .ci/run here: the stopped job left running).
STATUS_CHECKS = {"KNEURONS_STATUS_CHECK_CAP": "2"}


class FakeJob:
    """What the plugin's partition choice reads of a job."""

    def __init__(self, gpu: int, threads: int = 4, mem_mb: int = 48000):
        self.name, self.threads = "perturb", threads
        self.resources = {"gpu": gpu, "mem_mb": mem_mb, "runtime": 60}


class Quiet:
    def info(self, *_):
        pass

    debug = warning = info


def test_the_shipped_partitions_send_gpu_jobs_to_the_gpu_partition_and_the_others_to_the_cpu_one():
    partitions = read_partition_file(PROFILE / "partitions.yaml")
    assert get_best_partition(partitions, FakeJob(gpu=1), Quiet()) == "gpu"
    assert get_best_partition(partitions, FakeJob(gpu=0), Quiet()) == "cpu"
    assert get_best_partition(partitions, FakeJob(gpu=0, threads=1, mem_mb=2000), Quiet()) == "cpu"
    assert get_best_partition(partitions, FakeJob(gpu=1, mem_mb=10**7), Quiet()) is None  # fits nowhere
    shipped = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert "slurm_partition" not in str(shipped)  # no rule is pinned to a partition


@pytest.fixture(scope="module")
def node() -> Iterator[dict[str, int]]:
    """The one-node cluster, started for this module and stopped after it (its configuration removed)."""
    proc = subprocess.run(["bash", str(REPO / "tests/slurm/start_cluster.sh")], capture_output=True, text=True)
    try:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        yield {k: int(v) for k, v in (kv.split("=") for kv in proc.stdout.split())}
    finally:
        subprocess.run(["bash", str(REPO / "tests/slurm/stop_cluster.sh")], check=False)


def node_profile(root: Path, cpus: int, mem_mb: int) -> Path:
    """The site numbers of this one node, over the shipped profile (a later --profile overrides its keys), with
    short status polling for the test."""
    profile = root / "node"
    profile.mkdir()
    (profile / "partitions.yaml").write_text(
        yaml.safe_dump(
            {
                "partitions": {
                    "cpu": {"max_threads": cpus, "max_mem_mb": mem_mb, "max_runtime": 120, "max_gpu": 0},
                    "gpu": {"max_threads": cpus, "max_mem_mb": mem_mb, "max_runtime": 120, "max_gpu": 1},
                }
            }
        )
    )
    settings = {
        "slurm-partition-config": str(profile / "partitions.yaml"),
        "slurm-init-seconds-before-status-checks": 1,
        "seconds-between-status-checks": 2,
        "slurm-keep-successful-logs": True,
        "default-resources": {"mem_mb": 1000, "runtime": 30},
        # the local run's thread count (the config's `threads`), not the node's: torch's sums, and so the tables,
        # depend on the number of threads
        "set-threads": dict.fromkeys(MODEL_RULES, LOCAL_THREADS) | {"train_captioner": TRAIN_THREADS},
        "set-resources": {rule: {"mem_mb": min(3000, mem_mb), "runtime": 30} for rule in MODEL_RULES},
    }
    (profile / "config.yaml").write_text(yaml.safe_dump(settings))
    return profile


def slurm_cmd(work: Path, profile: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
            "--profile", str(PROFILE), "--profile", str(profile),
            "--configfile", str(DEFAULT_CONFIG), str(TEST_CONFIG), *args]  # fmt: skip


def completed_jobs(since: str, ids: bool = False) -> list[tuple[str, str]]:
    """(rule, state) of every SLURM job of the workflow submitted since ``since`` (sacct); with ``ids``, (job id,
    state)."""
    cmd = ["sacct", "-X", "-n", "-P", "-S", since, "-o", "JobID,Comment,State"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        job, comment, state = line.split("|")
        if comment.startswith("rule_"):
            jobs.append((job if ids else comment.removeprefix("rule_").split("_wildcards_")[0], state.split()[0]))
    return jobs


def _our_jobs() -> list[str]:
    """Ids of the workflow's SLURM jobs queued or running now (squeue; the plugin names each job's comment
    rule_...)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k"], capture_output=True, text=True, check=True).stdout
    return [job for job, comment in (line.split("|", 1) for line in out.splitlines()) if comment.startswith("rule_")]


def test_the_workflow_runs_as_slurm_jobs_resumes_after_ctrl_c_and_equals_the_local_run(node, request, tmp_path):
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    work = tmp_path / "cluster"
    work.mkdir()
    profile = node_profile(tmp_path, node["cpus"], node["mem_mb"])
    t0 = time.time()
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - closed below
    # a shell that runs the tests in the background ignores SIGINT, and its children inherit that: restore it
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    # the job after the synthetic data, `knowledge`, stops inside its write (tests/stop_point; sbatch passes the
    # environment on) and waits there for the Ctrl-C
    stopped = tmp_path / "stopped"
    env = stop_point_env("knowledge", stopped)  # the plugin's own back-off here: see STATUS_CHECKS
    first = subprocess.Popen(
        slurm_cmd(work, profile), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=restore, env=env
    )
    deadline = time.time() + 900
    while first.poll() is None and time.time() < deadline and not stopped.exists():
        time.sleep(0.5)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    submitted = _our_jobs()
    assert submitted, "no SLURM job of the run was queued or running at Ctrl-C"
    first.send_signal(signal.SIGINT)  # Ctrl-C: the plugin cancels the running SLURM jobs
    first.wait(timeout=300)
    log.close()
    assert first.returncode != 0
    deadline = time.time() + 60  # cancelled jobs pass through SLURM's COMPLETING state
    while _our_jobs() and time.time() < deadline:
        time.sleep(1)
    assert not _our_jobs(), "SLURM jobs left queued or running after Ctrl-C"
    states = dict(completed_jobs(since, ids=True))
    assert any(states[job].startswith("CANCELLED") for job in submitted if job in states), states  # scancel
    files = [p.relative_to(work).parts for p in (work / "results").rglob("*") if p.is_file()]
    made = {parts[1] for parts in files if not any(".tmp" in part for part in parts)}
    # besides the logs and the stopped job's temporary, only the outputs of the jobs that completed before the
    # Ctrl-C: the synthetic data, and the captioner where its training (beside `knowledge`) finished first; no
    # job that was cancelled left a file under its output's name
    finished = {rule for rule, state in completed_jobs(since) if state == "COMPLETED"}
    assert "synth_split" in finished, finished
    output_dir = {"synth_split": "synth", "train_captioner": "model", "evaluate_captioner": "model"}
    assert made - {"logs"} == {output_dir.get(rule, f"unexpected {rule}") for rule in finished}, (made, finished)
    assert list(work.glob("results/samples/.knowledge.tsv.tmp*")), "the stopped job left no temporary"
    assert snakemake(work, "--unlock").returncode == 0
    env = stop_point_env("", stopped) | STATUS_CHECKS
    second = subprocess.run(slurm_cmd(work, profile), capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.time() - t0
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-4000:]

    # every job but `all` went to SLURM: Snakemake ran no other rule locally, and sacct knows them all
    local = {ln.split()[1].rstrip(":") for ln in output.splitlines() if ln.startswith("localrule ")}
    assert local <= {"all"}, local
    done = [rule for rule, state in completed_jobs(since) if state == "COMPLETED"]
    expected_rules = {"synth_split", "train_captioner", "evaluate_captioner", "knowledge", "check_images", "inpaint",
                      "caption_candidates", "select_samples", "sample_table", "dumps",
                      "neurons_ours", "neurons_baseline", "neurons_ig_dai", "neurons_stage1", "neurons_control",
                      "neuron_summary", "edit_split", "edit_sets", "edit_eval", "editing",
                      "noise_scale", "reference_captions", "perturb", "table2", "table3", "restoration",
                      "pairwise", "dose_response", "layer_distribution", "heatmaps", "decoded_neurons",
                      "examples"}  # fmt: skip
    assert set(done) == expected_rules, set(done) ^ expected_rules
    assert done.count("perturb") == len(list(work.glob("results/perturb/ours/*.jsonl")))  # once per target
    assert done.count("synth_split") == 2  # made before the Ctrl-C, not made again by the resume
    assert done.count("train_captioner") == 1  # finished before the Ctrl-C and kept, or cancelled and run again
    for log in (work / "results/logs").rglob("*.log"):  # every model job ran on the local run's thread count
        text, threads = log.read_text(), TRAIN_THREADS if log.stem == "train_captioner" else LOCAL_THREADS
        assert "torch threads: " not in text or f"torch threads: {threads}\n" in text, log
    # Two runs from scratch, one local and one on SLURM: every output byte for byte (dumps, weights, every set)
    run_dir = request.getfixturevalue("run_dir")  # asked for now: another worker may be making it meanwhile
    assert assert_same_outputs(run_dir, work) > 100
    (tmp_path / "wall_seconds").write_text(f"{wall:.0f}\n")  # kept with pytest's tmp files, for the record
