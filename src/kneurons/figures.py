"""The report's figures with matplotlib: layer distribution of each method's neurons (Fig. 2), activation heatmaps
of a set's top neurons over the image (Fig. 3) and the dose–response of every method against its control. PNG
files, written atomically."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kneurons.io import atomic_path


def layer_shares(counts: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Each method's share of neurons per layer: ``counts[method]`` (L,) summed over its sets → (L,) summing to 1
    (all zeros where the method chose no neuron)."""
    shares = {}
    for method, c in counts.items():
        c = np.asarray(c, dtype=np.float64)
        shares[method] = c / c.sum() if c.sum() > 0 else c
    return shares


def _save(fig: Figure, out: str | os.PathLike) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})


def empty_figure(message: str, out: str | os.PathLike) -> None:
    """A figure that says why there is nothing to draw (e.g. no sample passed the constraints)."""
    fig = Figure(figsize=(6.0, 1.6))
    ax = fig.subplots()
    ax.set_axis_off()
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(message, 70)), ha="center", va="center", fontsize=10)
    _save(fig, out)


def plot_layer_distribution(counts: Mapping[str, Sequence[int]], out: str | os.PathLike) -> None:
    """Fig. 2: grouped bars of each method's share of neurons in each decoder layer (``counts[method]`` (L,)); a
    figure saying so when there is no neuron set."""
    if not counts:
        empty_figure("Layer distribution: no neuron set (no knowledge target has a sample in D).", out)
        return
    shares = layer_shares(counts)
    n_layers = len(next(iter(shares.values())))
    width = 0.8 / len(shares)
    fig = Figure(figsize=(max(6.0, 0.5 * n_layers * len(shares) / 2), 3.5))
    ax = fig.subplots()
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
    that neuron's activation at the image tokens (P,); ``regions`` (P, 4) [x0, y0, x1, y1] is the pixel region of
    the original image each token covers (NaN: none), the token-to-pixel map of the model's family."""

    title: str
    image: np.ndarray
    neurons: Sequence[tuple[int, int]]
    traces: Sequence[np.ndarray]
    regions: np.ndarray


def token_map(values: np.ndarray, regions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Token values (P,) painted over an (H, W) image: each pixel gets the mean value of the tokens whose region
    holds its centre (a base-image token and a tile token may both cover it); NaN where no token does. (H, W)
    float32."""
    total, count = np.zeros(size, np.float64), np.zeros(size, np.int64)
    for value, box in zip(values, regions, strict=True):
        if not np.isfinite(box).all():
            continue
        c0, r0, c1, r1 = (int(np.ceil(v - 0.5)) for v in box)  # pixel x is covered when x0 <= x + 0.5 < x1
        total[r0:r1, c0:c1] += value
        count[r0:r1, c0:c1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def mean_map(traces: Sequence[np.ndarray], regions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The paper's heatmap: the mean of the neurons' traces (each (P,)) painted over the (H, W) = ``size`` image
    through the token-to-pixel map ``regions`` (P, 4): (H, W) float32."""
    return token_map(np.mean(np.stack(traces), axis=0), regions, size)


def plot_heatmaps(panels: Sequence[HeatmapPanel], top: int, title: str, out: str | os.PathLike) -> None:
    """Fig. 3 as a PNG file (``heatmap_figure``)."""
    _save(heatmap_figure(panels, top, title), out)


def heatmap_figure(panels: Sequence[HeatmapPanel], top: int, title: str) -> Figure:
    """Fig. 3: one row per sample: the image, the mean activation of its top neurons over it (the paper's map),
    then each top neuron's own activation; every value sits on the pixels its token covers.

    Each heatmap has its own colour scale (its own min and max); an empty set gives a row with the image alone.
    """
    rows = max(1, len(panels))
    fig = Figure(figsize=(2.0 * (top + 2), 2.1 * rows))
    axes = fig.subplots(rows, top + 2, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for row, panel in zip(axes, panels, strict=False):
        size = panel.image.shape[:2]
        row[0].imshow(panel.image)
        row[0].set_title(panel.title, fontsize=8)
        if not panel.traces:
            continue
        row[1].imshow(panel.image)
        row[1].imshow(mean_map(panel.traces, panel.regions, size), cmap="jet", alpha=0.5)
        row[1].set_title(f"mean of top {len(panel.traces)}", fontsize=8)
        for ax, (layer, unit), trace in zip(row[2:], panel.neurons, panel.traces, strict=False):
            ax.imshow(panel.image)
            ax.imshow(token_map(trace, panel.regions, size), cmap="jet", alpha=0.5)
            ax.set_title(f"L{layer} #{unit}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


@dataclass(frozen=True)
class DosePoint:
    """One point of a dose–response curve: each score (S_re, S_se, dlogp_other, dlogp_own) with its 95 %
    interval, ``values[score] = (mean, lo, hi)``."""

    level: float | str
    values: Mapping[str, tuple[float, float, float]]


# The dose–response panels: (x score, y score, x label, y label).
DOSE_PANELS = (
    ("S_re", "S_se", "S_re: other images still name their own object", "S_se: k's images no longer name k"),
    (
        "dlogp_other",
        "dlogp_own",
        "dlogp_other: change of log p of the other images' own objects",
        "dlogp_own: change of log p(k) on k's images",
    ),
)


def _dose_panel(
    ax: Axes,
    curves: Mapping[str, Sequence[DosePoint]],
    controls: Mapping[str, Sequence[DosePoint]],
    reference: DosePoint | None,
    panel: tuple[str, str, str, str],
) -> None:
    xs, ys, xlabel, ylabel = panel
    for i, method in enumerate(curves):
        color = f"C{i}"
        control = controls.get(method, ())
        for points, style, label in ((curves[method], "-", method), (control, "--", f"{method} control")):
            noise = [p for p in points if p.level != "ablation"]
            ablation = [p for p in points if p.level == "ablation"]
            filled = style == "-"
            for group, marker in ((noise, "o"), (ablation, "s")):
                if not group:
                    continue
                x = np.array([p.values[xs][0] for p in group])
                y = np.array([p.values[ys][0] for p in group])
                xerr = np.abs(np.array([[p.values[xs][1] for p in group], [p.values[xs][2] for p in group]]) - x)
                yerr = np.abs(np.array([[p.values[ys][1] for p in group], [p.values[ys][2] for p in group]]) - y)
                ax.errorbar(
                    x,
                    y,
                    xerr=xerr,
                    yerr=yerr,
                    fmt=marker + (style if marker == "o" else ""),
                    color=color,
                    mfc=color if filled else "white",
                    capsize=2,
                    lw=1.2,
                    label=label if marker == "o" or not noise else "_nolegend_",
                )
            for p in noise:
                ax.annotate(
                    f"{p.level:g}",
                    (p.values[xs][0], p.values[ys][0]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    if reference is not None:
        ax.plot(reference.values[xs][0], reference.values[ys][0], "k*", ms=12, label="no perturbation")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if xs.startswith("S_"):
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def plot_dose_response(
    curves: Mapping[str, Sequence[DosePoint]],
    controls: Mapping[str, Sequence[DosePoint]],
    reference: DosePoint | None,
    caption: str,
    out: str | os.PathLike,
) -> None:
    """The dose–response figure, two panels: S_re (x) against S_se (y), and dlogp_other against dlogp_own, of each
    method through its noise levels (solid, the zero-ablation point a square), its random control dashed in the
    same colour (ablation a hollow square), the no-perturbation reference a black star; error bars are 95 %
    intervals. ``caption`` is printed under the axes."""
    fig = Figure(figsize=(13.0, 5.6))
    axes = fig.subplots(1, 2)
    for ax, panel in zip(axes, DOSE_PANELS, strict=True):
        _dose_panel(ax, curves, controls, reference, panel)
    fig.suptitle(
        "Dose–response: each method (solid) and its random control (dashed, hollow); "
        "circles: noise levels (labelled, in units of r); squares: zero-ablation",
        fontsize=9,
    )
    fig.text(0.01, -0.02, "\n".join(textwrap.wrap(caption, 200)), fontsize=8, va="top")
    _save(fig, out)


@dataclass(frozen=True)
class Bar:
    """One bar of the restoration figure: a set kind (or bound), its score (mean, lo, hi), hatched if a control."""

    label: str
    value: tuple[float, float, float]
    control: bool


def plot_restoration(panels: Mapping[str, Sequence[Bar]], out: str | os.PathLike) -> None:
    """The restoration figure: one panel per score (``panels[score]``), a bar per set kind (each method beside its
    random control, hatched), then the ceiling and the floor, with 95 % intervals."""
    fig = Figure(figsize=(6.0 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (score, bars) in zip(axes[0], panels.items(), strict=True):
        x = np.arange(len(bars))
        y = np.array([b.value[0] for b in bars], np.float64)
        err = np.abs(np.array([[b.value[1] for b in bars], [b.value[2] for b in bars]], np.float64) - y)
        colors = [f"C{i // 2}" if b.label not in ("ceiling", "floor") else "0.5" for i, b in enumerate(bars)]
        ax.bar(
            x,
            np.nan_to_num(y),
            yerr=np.nan_to_num(err),
            color=colors,
            capsize=3,
            hatch=None,
            edgecolor="black",
            linewidth=0.5,
        )
        for xi, b in zip(x, bars, strict=True):
            if b.control:
                ax.patches[int(xi)].set_hatch("//")
                ax.patches[int(xi)].set_alpha(0.6)
        ax.set_xticks(x, [b.label for b in bars], rotation=40, ha="right", fontsize=7)
        ax.set_ylabel(score)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "Restoration: inpainted images with each set patched to the original's values (hatched: control)", fontsize=9
    )
    _save(fig, out)
