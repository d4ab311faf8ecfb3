"""The paper's figures with matplotlib: layer distribution of each method's neurons (Fig. 2) and activation
heatmaps of a set's top neurons over the image on the model's grid (Fig. 3). PNG files, written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from kneurons.io import atomic_path


def layer_shares(counts: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Each method's share of neurons per layer: ``counts[method]`` (L,) summed over its sets → (L,) summing to 1
    (all zeros where the method chose no neuron)."""
    shares = {}
    for method, c in counts.items():
        c = np.asarray(c, dtype=np.float64)
        shares[method] = c / c.sum() if c.sum() > 0 else c
    return shares


def _save(fig: plt.Figure, out: str | os.PathLike) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def plot_layer_distribution(counts: Mapping[str, Sequence[int]], out: str | os.PathLike) -> None:
    """Fig. 2: grouped bars of each method's share of neurons in each decoder layer (``counts[method]`` (L,))."""
    shares = layer_shares(counts)
    n_layers = len(next(iter(shares.values())))
    width = 0.8 / len(shares)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * n_layers * len(shares) / 2), 3.5))
    for i, (method, s) in enumerate(shares.items()):
        ax.bar(np.arange(n_layers) + (i - (len(shares) - 1) / 2) * width, s, width, label=method)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("share of the method's neurons")
    ax.set_xticks(np.arange(n_layers))
    ax.legend()
    ax.set_title("Layer distribution of the neuron sets (all knowledge targets)")
    _save(fig, out)


@dataclass(frozen=True)
class HeatmapPanel:
    """One sample's row of Fig. 3: its original image (H, W, 3) uint8 and, for each top neuron (layer, unit),
    that neuron's activation over the image positions (P,) = rows × cols of ``grid``."""

    title: str
    image: np.ndarray
    neurons: Sequence[tuple[int, int]]
    traces: Sequence[np.ndarray]
    grid: tuple[int, int]


def plot_heatmaps(panels: Sequence[HeatmapPanel], top: int, title: str, out: str | os.PathLike) -> None:
    """Fig. 3: one row per sample, the image and then each top neuron's activation laid over it on the grid.

    Each heatmap has its own colour scale (its own min and max); an empty set gives a row with the image alone.
    """
    rows = max(1, len(panels))
    fig, axes = plt.subplots(rows, top + 1, figsize=(2.0 * (top + 1), 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for row, panel in zip(axes, panels, strict=False):
        h, w = panel.image.shape[:2]
        row[0].imshow(panel.image)
        row[0].set_title(panel.title, fontsize=8)
        for ax, (layer, unit), trace in zip(row[1:], panel.neurons, panel.traces, strict=False):
            ax.imshow(panel.image)
            ax.imshow(trace.reshape(panel.grid), cmap="jet", alpha=0.5, extent=(0, w, h, 0), interpolation="nearest")
            ax.set_title(f"L{layer} #{unit}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, out)
