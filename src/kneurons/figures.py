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
from matplotlib.patches import Patch

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
    """Fig. 2: grouped bars of each method's share of neurons in each decoder layer (``counts[method]`` (L,); the
    methods, not their random controls, which repeat their methods' per-layer counts), the legend beside the axes;
    a figure saying so when there is no neuron set."""
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
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title("Layer distribution of the neuron sets (all knowledge targets)", fontsize=10)
    ax.text(1.01, 0.0, "Each random control has\nits method's per-layer\ncounts by construction\n(not drawn).",
            transform=ax.transAxes, fontsize=7, color="0.35", va="bottom")  # fmt: skip
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


def _panel_maps(panel: HeatmapPanel) -> list[np.ndarray]:
    """A row's (H, W) maps: the mean of its traces, then each trace (none for an empty set)."""
    if not panel.traces:
        return []
    size = panel.image.shape[:2]
    return [mean_map(panel.traces, panel.regions, size)] + [token_map(t, panel.regions, size) for t in panel.traces]


def heatmap_figure(panels: Sequence[HeatmapPanel], top: int, title: str) -> Figure:
    """Fig. 3: one row per sample: the image, the mean activation of its top neurons over it (the paper's map),
    then each top neuron's own activation; every value sits on the pixels its token covers.

    Every heatmap of the figure shares one colour scale (the smallest and largest value over all of them), shown
    by one colour bar, so maps compare across neurons and samples; an empty set gives a row with the image alone.
    """
    rows = max(1, len(panels))
    fig = Figure(figsize=(2.0 * (top + 2) + 0.8, 2.1 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, top + 2, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    maps = [_panel_maps(p) for p in panels]
    values = [m[np.isfinite(m)] for row in maps for m in row]
    values = [v for v in values if v.size]
    lo, hi = (float(min(v.min() for v in values)), float(max(v.max() for v in values))) if values else (0.0, 1.0)
    shown = None
    for row, panel, row_maps in zip(axes, panels, maps, strict=False):
        row[0].imshow(panel.image)
        row[0].set_title(panel.title, fontsize=8)
        if not row_maps:
            continue
        labels = [f"mean of top {len(panel.traces)}"] + [f"L{layer} #{unit}" for layer, unit in panel.neurons]
        for ax, heat, label in zip(row[1:], row_maps, labels, strict=False):
            ax.imshow(panel.image)
            shown = ax.imshow(heat, cmap="jet", alpha=0.5, vmin=lo, vmax=hi)
            ax.set_title(label, fontsize=8)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes, shrink=min(0.9, 0.45 + 0.15 * rows), pad=0.01)
        bar.set_label("activation O' (one scale for every map)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
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


# Where a set specific to k moves each panel's points from the unperturbed star: (x, y) direction, and the words.
SPECIFIC = {
    "S_re": ("top right", "specific: up (k gone) while right (others kept)"),
    "dlogp_other": ("bottom right", "specific: down (log p(k) falls) while right (others' kept)"),
}


def _points(ax: Axes, points: Sequence[DosePoint], xs: str, ys: str, color: str, filled: bool, label: str) -> None:
    """One curve: its noise levels joined (circles) and its zero-ablation point (a square), with 95 % intervals."""
    noise = [p for p in points if p.level != "ablation"]
    ablation = [p for p in points if p.level == "ablation"]
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
            fmt=marker + ("-" if filled else "--") * (marker == "o"),
            color=color,
            mfc=color if filled else "white",
            capsize=2,
            lw=1.2 if filled else 1.0,
            ms=5,
            label=(label if marker == "o" else f"{label}, ablation") if group else "_nolegend_",
        )


def _limits(values: Sequence[float], pad: float = 0.08) -> tuple[float, float] | None:
    """The axis range of ``values`` with a margin; None where none is finite (e.g. log p turned off)."""
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, 1e-3)
    return lo - pad * span, hi + pad * span


def _dose_row(
    axes: Sequence[Axes],
    curves: Mapping[str, Sequence[DosePoint]],
    controls: Mapping[str, Sequence[DosePoint]],
    reference: DosePoint | None,
    panel: tuple[str, str, str, str],
) -> None:
    """One row of the small multiples: a panel per method, the method (solid) beside its random control (dashed,
    hollow) and the unperturbed model (a black star); every panel of the row on the same axes."""
    xs, ys, xlabel, ylabel = panel
    every = [p for pts in (*curves.values(), *controls.values()) for p in pts] + ([reference] if reference else [])
    xlim = _limits([v for p in every for v in p.values[xs]])
    ylim = _limits([v for p in every for v in p.values[ys]])
    corner, words = SPECIFIC[xs]
    for i, (ax, method) in enumerate(zip(axes, curves, strict=True)):
        color = f"C{i}"
        _points(ax, controls.get(method, ()), xs, ys, color, False, "random control")
        _points(ax, curves[method], xs, ys, color, True, method)
        for point in curves[method]:  # the method's noise levels, labelled once, clear of the markers
            if point.level != "ablation":
                ax.annotate(f"{point.level:g}", (point.values[xs][0], point.values[ys][0]), fontsize=7,
                            xytext=(-4, 4), textcoords="offset points", ha="right", color=color)  # fmt: skip
        if reference is not None:
            ax.plot(reference.values[xs][0], reference.values[ys][0], "k*", ms=11, label="no perturbation")
        if xlim is None or ylim is None:
            ax.text(0.5, 0.5, f"no {xs} / {ys} values", transform=ax.transAxes, ha="center", fontsize=8)
        else:
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
        ax.set_title(method, fontsize=10, color=color)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        where = {"top right": (0.97, 0.97, "right", "top"), "bottom right": (0.97, 0.03, "right", "bottom")}[corner]
        ax.text(where[0], where[1], words, transform=ax.transAxes, ha=where[2], va=where[3], fontsize=6.5,
                color="0.35", wrap=True)  # fmt: skip
        if i == 0:
            ax.set_ylabel(ylabel, fontsize=8)
            ax.legend(fontsize=6.5, loc="lower left" if corner == "top right" else "upper left")


def plot_dose_response(
    curves: Mapping[str, Sequence[DosePoint]],
    controls: Mapping[str, Sequence[DosePoint]],
    reference: DosePoint | None,
    out: str | os.PathLike,
) -> None:
    """The dose–response figure as small multiples: a column per method, the method beside its random control;
    top row S_re (x) against S_se (y), bottom row dlogp_other against dlogp_own. Noise levels are circles joined
    and labelled (in units of the reference scale r), zero-ablation a square, the unperturbed model a black star;
    error bars are 95 % intervals. A row's panels share their axes; each panel says which way is specific."""
    n = len(curves)
    fig = Figure(figsize=(3.4 * n + 0.6, 7.0), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for row, panel in zip(axes, DOSE_PANELS, strict=True):
        _dose_row(row, curves, controls, reference, panel)
    fig.suptitle(
        "Dose–response: each method (solid, filled) beside its random control (dashed, hollow); circles: noise "
        "levels in units of r; squares: zero-ablation; star: no perturbation",
        fontsize=9,
    )
    _save(fig, out)


@dataclass(frozen=True)
class Bar:
    """One bar of the restoration figure: a set kind (or bound), its score (mean, lo, hi), hatched if a control."""

    label: str
    value: tuple[float, float, float]
    control: bool
    n: int = 0  # the samples behind the score


def _bar_panel(ax: Axes, score: str, bars: Sequence[Bar], share: bool) -> None:
    """One panel of bars with 95 % intervals: a method's colour pairs it with its control (hatched); bounds and the
    unedited model in grey. Every bar is labelled with its value; with ``share`` a value of exactly 0 reads "0 of
    n" (n: the bar's samples), so a bar of height 0 still reads."""
    x = np.arange(len(bars))
    y = np.array([b.value[0] for b in bars], np.float64)
    err = np.abs(np.array([[b.value[1] for b in bars], [b.value[2] for b in bars]], np.float64) - y)
    colors, pair = [], -1
    for b in bars:
        grey = b.label in GREY_BARS
        pair += not (b.control or grey)
        colors.append("0.5" if grey else f"C{pair}")
    drawn = ax.bar(x, np.nan_to_num(y), yerr=np.nan_to_num(err), color=colors, capsize=3, edgecolor="black",
                   linewidth=0.5)  # fmt: skip
    for patch, b in zip(drawn.patches, bars, strict=True):
        if b.control:
            patch.set_hatch("////")
            patch.set_facecolor("white")
            patch.set_edgecolor(patch.get_edgecolor())
    top = np.nan_to_num(np.maximum(y, y + err[1]))
    ends = np.concatenate([y + err[1], y - err[0]]) if len(bars) else np.zeros(0)
    ends = np.abs(ends[np.isfinite(ends)])
    span = max(float(ends.max()) if ends.size else 1.0, 1e-6)  # no finite value (or no bar): a unit scale
    for xi, b, yi, ti in zip(x, bars, y, top, strict=True):
        if not np.isfinite(yi):
            text = "n/a"
        elif share and yi == 0 and b.n:
            text = f"0 of {b.n}"  # a share of exactly 0: none of the n samples
        else:
            text = f"{yi:.3f}" if share else f"{yi:+.3f}"
        ax.text(xi, max(ti, 0) + 0.02 * span, text, ha="center", va="bottom", fontsize=6.5, rotation=90)
    ax.set_xticks(x, [b.label for b in bars], rotation=40, ha="right", fontsize=7)
    ax.set_ylabel(score)
    ax.set_ylim(top=ax.get_ylim()[1] + 0.25 * span)
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(axis="y", alpha=0.3)


GREY_BARS = ("ceiling", "floor", "none")


def plot_restoration(panels: Mapping[str, Sequence[Bar]], out: str | os.PathLike) -> None:
    """The restoration figure: one panel per score (``panels[score]``), a bar per set kind (each method beside its
    random control, hatched), then the ceiling and the floor, with 95 % intervals. Every bar is labelled with its
    value, a share (scores named S_*) of exactly 0 as "0 of n" samples, so a bar of height 0 still reads."""
    fig = Figure(figsize=(6.0 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (score, bars) in zip(axes[0], panels.items(), strict=True):
        _bar_panel(ax, score, bars, score.startswith("S_"))
    handles = [
        Patch(facecolor="C0", edgecolor="black", label="a method's sets (colour: method)"),
        Patch(facecolor="white", edgecolor="black", hatch="////", label="its random control"),
        Patch(facecolor="0.5", edgecolor="black", label="bounds: ceiling (original image), floor (inpainted)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle("Restoration: inpainted images with each set patched to the original's values", fontsize=9)
    _save(fig, out)


def plot_editing(panels: Mapping[str, Sequence[Bar]], out: str | os.PathLike) -> None:
    """The editing figure: one panel per (edit, score) (``panels["erase, α = 0: efficacy"]``), two per row (the edit's
    headline score, then locality), a bar per set kind (each method beside its random controls, hatched) and the
    unedited model (grey), with 95 % intervals."""
    if not panels:
        empty_figure("No knowledge-level set was edited.", out)
        return
    rows = (len(panels) + 1) // 2
    fig = Figure(figsize=(11.0, 3.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    for ax, (title, bars) in zip(axes.flat, panels.items(), strict=False):
        edit, score = title.split(": ")
        _bar_panel(ax, score, bars, True)
        ax.set_title(edit, fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles = [
        Patch(facecolor="C0", edgecolor="black", label="a method's knowledge-level set (colour: method)"),
        Patch(facecolor="white", edgecolor="black", hatch="////", label="its random controls (mean over draws)"),
        Patch(facecolor="0.5", edgecolor="black", label="none: the unedited model"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle("Editing in the weights, judged on held-out images (efficacy, rewrite, hallucination) and on images "
                 "without k (locality)", fontsize=9)  # fmt: skip
    _save(fig, out)
