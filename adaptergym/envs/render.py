"""Rendering helpers: a plain-text table for ``ansi`` and a matplotlib bar chart for ``rgb_array``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adaptergym.errors import DependencyNotInstalled


def text_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], footer: str = "") -> str:
    """A fixed-width table: title line, header, one line per row, optional footer."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(cells[0], widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells[1:]]
    if footer:
        lines.append(footer)
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if not np.isfinite(value) else f"{value:.3g}"
    return str(value)


def bar_chart(title: str, labels: Sequence[str], load: np.ndarray, served: np.ndarray | None,
              starved: np.ndarray | None, capacity_line: float | None = 1.0) -> np.ndarray:
    """An RGB image (H, W, 3, uint8): offered load per bar, served load over it, starved bars in red.

    Raises:
        DependencyNotInstalled: matplotlib is missing.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise DependencyNotInstalled("render_mode='rgb_array' needs matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(6.4, 3.6), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    ax.bar(x, load, color="#c7d3e3", label="offered")
    if served is not None:
        colors = ["#d62728" if s else "#2c7fb8" for s in (starved if starved is not None else np.zeros(len(x)))]
        ax.bar(x, served, width=0.5, color=colors, label="served (red: starved)")
    if capacity_line is not None:
        ax.axhline(capacity_line, color="k", lw=0.8, ls="--", label="reference capacity")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("load / GPU capacity")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
