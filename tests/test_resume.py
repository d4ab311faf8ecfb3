"""Interrupted runs resume: a run of the test config killed (SIGKILL, its whole process group) during training,
inside a dump's write and inside a perturbation file's write resumes with --rerun-incomplete, reruns only the jobs
that had not finished and gives every output of an uninterrupted run byte for byte; outputs a killed run never
recorded as finished, and dumps found truncated, are recomputed."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kneurons.preflight import discard_interrupted, interrupted_outputs
from tests.helpers import REPO, TEST_CONFIG, assert_same_outputs, job_counts, snakemake, stop_point_env


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


def _tree(workdir: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``workdir``'s results/ and Snakemake's markers, with its size and modification time."""
    files = [*(workdir / "results").rglob("*"), *(workdir / ".snakemake/incomplete").rglob("*")]
    return {str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()}


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


def test_sigkill_at_three_points_then_resume_reruns_only_unfinished_jobs_and_gives_identical_results(request, tmp_path):
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
    run_dir = request.getfixturevalue("run_dir")  # asked for now: another worker may be making it meanwhile
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
    # Reading the workflow changes nothing: a dry run, a report and the linter leave every file as it was (the
    # truncated dump and the unrecorded output included); only a run that executes jobs discards them.
    before = _tree(work)
    for args in (["-n"], ["--report", str(tmp_path / "report.html")], ["--lint"], ["--list-changes", "code"]):
        read = snakemake(work, *args)
        assert read.returncode == 0, (args, read.stderr[-3000:])
        assert _tree(work) == before, args
        if args == ["-n"]:
            assert f"{dump.relative_to(work)}: truncated or incomplete HDF5 dump; " in read.stderr
    proc = snakemake(work, "--cores", "2", str(dump.parent.relative_to(work)), target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{dump.relative_to(work)}: truncated or incomplete HDF5 dump" in proc.stderr
    assert f"{gradcam}: left by a job that an interrupted run never recorded as finished; recomputed" in proc.stderr
    assert job_counts(proc.stdout + proc.stderr) == {"dumps": 1, "neurons_ours": 1}
    assert not _snakemake_records(work, "incomplete")
    for path in [dump, *(work / gradcam).iterdir(), *(work / target).iterdir()]:
        assert path.read_bytes() == (run_dir / path.relative_to(work)).read_bytes()
