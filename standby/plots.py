"""Figures for people, drawn with matplotlib as SVG: the evaluation report's plots
(``evaluator/report_html.py``) and the trainer's loss curve (``loss.svg`` beside the adapter).
The one owner of their look: size, colours, fonts.

SVG, because it is text: it goes inline into a self-contained HTML page (no JavaScript, no
network), stays sharp at any zoom, and is small. Text stays text (``svg.fonttype: none``), so a
browser or a test can read the titles and labels; ids are fixed (``svg.hashsalt``), so the same
numbers give the same file. matplotlib is imported only inside the functions, through
``Figure`` and never ``pyplot``: no display, no global state, and nothing for a module that does
not draw to load (the gateway never imports this module: ``[tool.importlinter]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

# Candidate first, the serving model second, then any other series; marks (thresholds, bounds).
COLOURS = ("#1f6feb", "#8c959f", "#bf8700", "#2da44e")
MARK = "#cf222e"
WIDTH_IN = 9.0
PANEL_HEIGHT_IN = 2.6
_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "standby",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "legend.frameon": False,
}


@dataclass(frozen=True)
class Panel:
    """One histogram panel: counts per bin of each series (same bins), and vertical marks."""

    title: str
    series: Mapping[str, Sequence[float]]
    marks: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval (the gate's paired difference)."""

    label: str
    mean: float
    low: float
    high: float


@contextmanager
def _figure(panels: int, height: float = PANEL_HEIGHT_IN) -> Iterator[Figure]:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        yield Figure(figsize=(WIDTH_IN, height * panels), layout="constrained")


def _svg(fig: Figure, title: str, *, standalone: bool = False) -> str:
    """The figure as SVG markup: a whole file, or (default) the ``<svg>`` element alone for an
    HTML page, with ``title`` as its accessible name."""
    import io

    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Title": title, "Date": None, "Creator": None})
    text = buf.getvalue()
    return text if standalone else text[text.index("<svg") :]


def histograms(
    panels: Sequence[Panel], edges: Sequence[float], *, title: str, xlabel: str = "score"
) -> str:
    """Side-by-side bars of each panel's series over ``edges``, marks as dashed lines."""
    with _figure(1) as fig:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, panel in zip(axes, panels, strict=True):
            _bars(ax, panel, edges)
            ax.set_xlabel(xlabel)
        axes[0].set_ylabel("rows")
        fig.suptitle(title, fontweight="bold")
        return _svg(fig, title)


def _bars(ax: Axes, panel: Panel, edges: Sequence[float]) -> None:
    from matplotlib.ticker import MaxNLocator

    n = max(len(panel.series), 1)
    widths = [(hi - lo) / (n + 0.5) for lo, hi in pairwise(edges)]
    for i, (name, counts) in enumerate(panel.series.items()):
        lefts = [lo + w * (i + 0.25) for lo, w in zip(edges, widths, strict=False)]
        ax.bar(lefts, counts, widths, align="edge", color=COLOURS[i % len(COLOURS)], label=name)
    for j, (name, x) in enumerate(panel.marks.items()):
        ax.axvline(x, color=MARK, linestyle=("--", ":")[j % 2], linewidth=1.2, label=name)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_title(panel.title)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", fontsize=8)


def intervals(rows: Sequence[Interval], *, margin: float, title: str, xlabel: str) -> str:
    """Each mean as a dot on its interval, against 0 and the non-inferiority bound -margin
    (the region below it shaded: an interval reaching into it fails)."""
    with _figure(1, 1.2 + 0.5 * len(rows)) as fig:
        ax = fig.subplots()
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows, strict=True):
            ax.plot([r.low, r.high], [y, y], color=COLOURS[0], linewidth=3, solid_capstyle="butt")
            ax.plot([r.mean], [y], "o", color=COLOURS[0], markersize=7)
            ax.annotate(
                f"{r.mean:+.1f} [{r.low:+.1f}, {r.high:+.1f}]",
                (r.high, y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
            )
        lows = [r.low for r in rows] + [-margin]
        highs = [r.high for r in rows] + [0.0]
        pad = max(2.0, 0.15 * (max(highs) - min(lows)))
        left, right = min(lows) - pad, max(highs) + 3 * pad
        ax.axvspan(left, -margin, color=MARK, alpha=0.08, label="worse than the margin allows")
        ax.axvline(
            -margin, color=MARK, linestyle="--", linewidth=1.2, label=f"-margin ({-margin:g})"
        )
        ax.axvline(0, color="#57606a", linewidth=0.8)
        ax.set_xlim(left, right)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_yticks(ys, [r.label for r in rows])
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        fig.legend(loc="outside lower center", ncols=2, fontsize=8)
        return _svg(fig, title)


def scores(values: Mapping[str, float | None], limits: Mapping[str, float], *, title: str) -> str:
    """Horizontal bars of scores between 0 and 1, each with its threshold as a tick."""
    names = list(values)
    with _figure(1, 0.9 + 0.45 * len(names)) as fig:
        ax = fig.subplots()
        ys = list(range(len(names)))[::-1]
        shown = [values[n] or 0.0 for n in names]
        ax.barh(ys, shown, color=COLOURS[0], height=0.6)
        for y, name, width in zip(ys, names, shown, strict=True):
            v = values[name]
            said = "n/a" if v is None else f"{v:.2f}"
            ax.annotate(said, (width, y), xytext=(4, 0), textcoords="offset points", va="center")
            if name in limits:
                ax.plot([limits[name]] * 2, [y - 0.4, y + 0.4], color=MARK, linewidth=2)
        ax.set_xlim(0, 1)
        ax.set_yticks(ys, names)
        ax.set_xlabel("share of rows (threshold in red)")
        ax.set_title(title)
        return _svg(fig, title)


def loss_curve(
    train: Sequence[tuple[int, float]], evals: Sequence[tuple[int, float]], *, title: str
) -> str:
    """The training loss per logged step, and the eval loss where it was measured: a whole
    SVG file (the curves are the groups ``train-loss`` and ``eval-loss``)."""
    with _figure(1, 3.6) as fig:
        ax = fig.subplots()
        if train:
            steps, losses = zip(*train, strict=True)
            ax.plot(
                steps, losses, color=COLOURS[0], marker=".", label="training loss", gid="train-loss"
            )
        if evals:
            steps, losses = zip(*evals, strict=True)
            ax.plot(steps, losses, color=COLOURS[2], marker="o", label="eval loss", gid="eval-loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        return _svg(fig, title, standalone=True)
