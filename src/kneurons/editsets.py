"""What a weight edit is judged with: a knowledge's units aggregated over its samples' sets (Dai et al.'s sharing
rule), each beside random controls drawn outside every set of the knowledge, and the images the edits are judged
on, none of them an image the units were found on.

A knowledge-level set holds the units that at least a share p of k's per-sample sets hold (the discovery samples:
k's samples of D); its controls have its per-layer counts, units drawn at random (seeded) from those in no set of
k (of any method). The split of a target k lists, with the reason each is there: the discovery images (k's samples
of D), held-out images of k (k annotated, the clean caption names k, not in D) and locality images (k not
annotated, the clean caption names every object annotated in it, not in D).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kneurons.captions import mentions
from kneurons.names import CONTROL
from kneurons.neurons import NeuronSet, random_neurons, shared_units
from kneurons.samples import Candidate, Knowledge

DISCOVERY, HELDOUT, LOCALITY = "discovery", "heldout", "locality"
ROLES = (DISCOVERY, HELDOUT, LOCALITY)


def _layer_counts(units: Sequence[Sequence], n_layers: int) -> list[int]:
    counts = [0] * n_layers
    for u in units:
        counts[int(u[0])] += 1
    return counts


def knowledge_set(method: str, knowledge: str, sets: Sequence[dict], share: float, budget: int | None) -> dict:
    """``method``'s knowledge-level set of ``knowledge`` from its per-sample sets ``sets`` (the set files' dicts):
    the units at least ``share`` of them hold, most shared first, at most ``budget``; each unit's score is the share
    of the sets that hold it. ``sizes_by_share`` gives the size at every share i/n a set count n allows."""
    rows = [s["neurons"] for s in sets]
    n_layers = len(sets[0]["layer_counts"]) if sets else 0
    units = shared_units(rows, share, budget) if rows else []
    return {
        "method": method,
        "knowledge": knowledge,
        "share": share,
        "budget": budget,
        "samples": [s["image_id"] for s in sets],
        "sample_sizes": [len(r) for r in rows],
        "sizes_by_share": {
            f"{i}/{len(rows)}": len(shared_units(rows, i / len(rows), budget)) for i in range(1, len(rows) + 1)
        },
        "size": len(units),
        "layer_counts": _layer_counts(units, n_layers),
        "score": "share of the per-sample sets holding the unit",
        "neurons": [[layer, unit, score] for layer, unit, score in units],
    }


def in_any_set(sets: Sequence[dict], shape: tuple[int, int]) -> np.ndarray:
    """(L, d_ff) bool: the units any of ``sets`` (set files' dicts) holds."""
    mask = np.zeros(shape, bool)
    for s in sets:
        for layer, unit, *_ in s["neurons"]:
            mask[int(layer), int(unit)] = True
    return mask


def knowledge_controls(shadowed: dict, exclude: np.ndarray, draws: int) -> dict:
    """``draws`` random controls of the knowledge-level set ``shadowed``: each with its per-layer counts, units
    drawn uniformly from those ``exclude`` (L, d_ff) bool does not mark, seeded by method, knowledge and draw.
    ``neurons`` is the first draw (what ``python -m kneurons.edit --set`` reads), ``draws`` all of them."""
    method, k = shadowed["method"], shadowed["knowledge"]
    seeds = [zlib.crc32(f"{method}{CONTROL}/{k}/{i}".encode()) for i in range(draws)]
    chosen = [
        NeuronSet.from_mask(m, np.zeros(m.shape, np.float32)).rows()
        for m in (random_neurons(shadowed["layer_counts"], exclude.shape[1], s, exclude) for s in seeds)
    ]
    return {
        "method": method + CONTROL,
        "control_of": method,
        "knowledge": k,
        "seeds": seeds,
        "size": shadowed["size"],
        "layer_counts": shadowed["layer_counts"],
        "score": f"none (random control: {method}'s per-layer counts, units in no set of {k})",
        "neurons": chosen[0] if chosen else [],
        "draws": chosen,
    }


def draws_of(nset: dict) -> list[list[list]]:
    """The unit lists a knowledge-level set file holds: a control's draws, or the set's own units."""
    return nset.get("draws", [nset["neurons"]])


@dataclass(frozen=True)
class SplitRow:
    """One image of a target's split: its ``role`` (discovery, heldout, locality), why it is there, its annotated
    ``objects`` (comma-separated), its clean ``caption`` and the ids the model emitted for it."""

    knowledge: str
    image_id: int
    role: str
    reason: str
    objects: str
    caption: str
    caption_ids: str

    def row(self) -> dict:
        return asdict(self)


def _names_all(caption: str, objects: Sequence[str], synonyms: Mapping[str, Sequence[str]]) -> bool:
    return all(mentions(caption, o, synonyms.get(o, ())) for o in objects)


def split(
    knowledge: str,
    discovery: Sequence[Candidate],
    captioned: Mapping[str, Sequence[Candidate]],
    in_d: set[int],
    n_heldout: int,
    n_locality: int,
    seed: int,
    synonyms: Mapping[str, Sequence[str]],
) -> list[SplitRow]:
    """The split of ``knowledge``: its samples of D (``discovery``: D's rows of it), then up to
    ``n_heldout`` held-out and ``n_locality`` locality images drawn (seeded by ``seed`` and the knowledge) from the
    captioned candidates of every target (``captioned``: name -> rows; an image's objects are its row's knowledge
    and others), never an image whose id is in ``in_d``."""
    images: dict[int, Candidate] = {}
    for rows in captioned.values():
        for r in rows:
            if r.caption and r.caption_ids:
                images.setdefault(r.image_id, r)

    def objects(r: Candidate) -> list[str]:
        return [r.knowledge, *filter(None, r.others.split(","))]

    out = [
        SplitRow(
            knowledge,
            r.image_id,
            DISCOVERY,
            "a sample of D: the sets were found on it",
            ",".join(objects(r)),
            r.caption,
            r.caption_ids,
        )
        for r in discovery
    ]
    own = synonyms.get(knowledge, ())
    heldout = [
        r
        for i, r in sorted(images.items())
        if i not in in_d and knowledge in objects(r) and mentions(r.caption, knowledge, own)
    ]
    locality = [
        r
        for i, r in sorted(images.items())
        if i not in in_d and knowledge not in objects(r) and _names_all(r.caption, objects(r), synonyms)
    ]
    rng = np.random.default_rng([seed, zlib.crc32(knowledge.encode())])
    for role, pool, n, why in (
        (HELDOUT, heldout, n_heldout, f"{knowledge} annotated, its clean caption names {knowledge}, not in D"),
        (LOCALITY, locality, n_locality, f"no {knowledge}; its clean caption names every object in it, not in D"),
    ):
        picked = sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False).tolist())
        out += [
            SplitRow(
                knowledge, pool[j].image_id, role, why, ",".join(objects(pool[j])), pool[j].caption, pool[j].caption_ids
            )
            for j in picked
        ]
    return out


def rewrite_target(name: str, targets: Sequence[Knowledge], overrides: Mapping[str, str]) -> str:
    """k' of the target ``name``: ``overrides[name]`` where given, else the first of ``targets`` (knowledge.tsv's
    order) of another supercategory (else any other target); "" when there is no other target."""
    if name in overrides:
        return overrides[name]
    own = next((t.supercategory for t in targets if t.name == name), None)
    others = [t for t in targets if t.name != name]
    return next((t.name for t in others if t.supercategory != own), others[0].name if others else "")
