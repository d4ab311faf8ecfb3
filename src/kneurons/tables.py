"""Table II from the perturbation files, and the notes every table carries on targets without samples or sets."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from kneurons.io import write_text, write_tsv_rows
from kneurons.metrics import SCORES, markdown_table, table2
from kneurons.samples import read_tsv, reason_counts
from kneurons.selection import read_knowledge, selected


def read_perturbations(perturb_jsonls: Sequence[str]) -> tuple[list[dict], Counter]:
    """The caption lines of the perturbation files (rule perturb), in file order, and the number of empty sets
    per (method, knowledge)."""
    lines = [json.loads(ln) for p in perturb_jsonls for ln in Path(p).read_text().splitlines()]
    empty = Counter((ln["method"], ln["knowledge"]) for ln in lines if ln.get("empty"))
    return [ln for ln in lines if not ln.get("empty")], empty


def coverage_notes(knowledge_tsv: str, samples_tsv: str, empty: Counter) -> dict[str, str]:
    """Why a knowledge target has fewer rows than the others: no sample passed the constraints (with the reason
    counts), or some of its neuron sets are empty. {knowledge: note}; targets with nothing to say are left out."""
    rows = read_tsv(samples_tsv)
    notes = {}
    for target in read_knowledge(knowledge_tsv):
        mine = [r for r in rows if r.knowledge == target.name]
        if not selected(mine):
            reasons = ", ".join(f"{why}: {n}" for why, n in sorted(reason_counts(mine).items())) or "no candidate image"
            notes[target.name] = f"no sample passed the constraints ({reasons})"
    for (method, k), n in sorted(empty.items()):
        notes[k] = "; ".join(filter(None, [notes.get(k), f"{method}: {n} empty set(s), no neuron over the thresholds"]))
    return notes


def notes_markdown(notes: dict[str, str]) -> str:
    """The notes of coverage_notes as a Markdown list under a heading (nothing when there are none)."""
    return "\nNotes\n\n" + "".join(f"- {k}: {note}\n" for k, note in notes.items()) if notes else ""


# Each score with the bounds of its 95 % interval.
SCORE_COLUMNS = [f"{m}{suffix}" for m in SCORES for suffix in ("", "_lo", "_hi")]
TABLE2_COLUMNS = ["method", "knowledge", "level", "sets", "empty_sets", *SCORE_COLUMNS, "note"]


def table2_stage(
    perturb_jsonls: Sequence[str], knowledge_tsv: str, samples_tsv: str, out_csv: str, out_md: str
) -> None:
    """Rule table2: Table II as CSV (every row) and Markdown (the per-method summary rows and per-level rows).

    Every method gets a row (sets 0, metrics nan, with a note) for a target with no sample or only empty sets.
    """
    lines, empty = read_perturbations(perturb_jsonls)
    notes = coverage_notes(knowledge_tsv, samples_tsv, empty)
    rows = table2(lines)
    methods = sorted({r["method"] for r in rows} | {m for m, _ in empty})
    present = {(r["method"], r["knowledge"]) for r in rows}
    nan = dict.fromkeys(SCORE_COLUMNS, float("nan"))
    rows += [
        {"method": m, "knowledge": k, "level": "all", "sets": 0} | nan
        for m in methods
        for k in [*notes, "all"]
        if (m, k) not in present
    ]
    for r in rows:
        is_all = r["knowledge"] == "all"
        r["empty_sets"] = sum(n for (m, k), n in empty.items() if m == r["method"] and (is_all or k == r["knowledge"]))
        r["note"] = "" if is_all else notes.get(r["knowledge"], "")
    write_tsv_rows(out_csv, rows, TABLE2_COLUMNS, delimiter=",")
    summary = [r for r in rows if r["knowledge"] == "all"]
    cols = ["method", "level", "sets", *SCORES]
    ci = [{**r, **{m: f"{r[m]:.3f} [{r[m + '_lo']:.3f}, {r[m + '_hi']:.3f}]" for m in SCORES}} for r in summary]
    write_text(
        out_md,
        "Table II (95 % bootstrap intervals over samples)\n\n" + markdown_table(ci, cols) + notes_markdown(notes),
    )
