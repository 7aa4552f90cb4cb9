"""Drawings made by code: what the chapters explain with pictures rather than numbers.

Read by ``docs/make_figures.py`` (which owns the figure list). Each function draws one PNG with
matplotlib patches only, from the same symbols the text uses.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

CHANNEL_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")  # one per input channel (M = 4)
FILTER_COLORS = ("#8172b3", "#937860", "#da8bc3")  # one per output channel (N = 3)


def _slab(ax, x, y, w, h, depth, color, dx=0.18, dy=0.14, alpha=1.0):
    """A square of size (w, h) at (x, y), ``depth`` copies stacked back to front: a tensor of
    ``depth`` channels seen at an angle. ``color``: one colour or one per slice."""
    colors = color if isinstance(color, (list, tuple)) and not isinstance(color, str) else [color] * depth
    for k in reversed(range(depth)):
        ox, oy = x + k * dx, y + k * dy
        ax.add_patch(Rectangle((ox, oy), w, h, facecolor=colors[k], edgecolor="black", lw=0.6, alpha=alpha))


def _arrow(ax, x0, x1, y):
    ax.annotate("", xy=(x1, y), xytext=(x0, y), arrowprops={"arrowstyle": "->", "lw": 1.0})


def overlapping_text(fig) -> list:
    """Pairs of the figure's visible texts whose boxes overlap, as drawn: (text, text)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    hidden = {  # the axis texts of axes drawn without axes (axis("off")): never drawn
        id(t)
        for ax in fig.axes
        if not ax.axison
        for axis in (ax.xaxis, ax.yaxis)
        for t in [*axis.get_ticklabels(which="both"), axis.label, axis.get_offset_text()]
    }
    texts = [
        t
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in hidden
    ]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [
        (a, b)
        for i, (a, ba) in enumerate(boxes)
        for b, bb in boxes[i + 1 :]
        if ba.overlaps(bb) and ba.width > 0 and bb.width > 0
    ]


def fig_separable(path):
    fig = draw_separable()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_separable():
    """Standard, depthwise and pointwise convolution, each: input (D_F x D_F x M), its filters,
    its output, and its multiply-add count (M = 4 input channels, N = 3 outputs, k = 3)."""
    M, N = 4, 3
    fig, axes = plt.subplots(3, 1, figsize=(8.4, 7.8))
    rows = [
        (
            "standard convolution",
            [dict(depth=M, color=list(CHANNEL_COLORS)) for _ in range(N)],
            "N filters of k x k x M: every output mixes every input channel",
            "k² · M · N · D_F²",
            N,
            FILTER_COLORS,
        ),
        (
            "depthwise convolution (groups = M)",
            [dict(depth=1, color=c) for c in CHANNEL_COLORS],
            "M filters of k x k x 1: one per input channel, no mixing",
            "k² · M · D_F²",
            M,
            CHANNEL_COLORS,
        ),
        (
            "pointwise convolution (1 x 1)",
            [dict(depth=M, color=list(CHANNEL_COLORS), size=0.32) for _ in range(N)],
            "N filters of 1 x 1 x M: mixes channels at each pixel",
            "M · N · D_F²",
            N,
            FILTER_COLORS,
        ),
    ]
    for ax, (title, filters, caption, cost, out_depth, out_colors) in zip(axes, rows):
        ax.set_xlim(0, 12)
        ax.set_ylim(-0.9, 2.6)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{title}:  {cost} multiply-adds", loc="left", fontsize=11)
        _slab(ax, 0.2, 0.2, 1.6, 1.6, M, list(CHANNEL_COLORS))
        ax.text(1.3, -0.25, "input\nD_F x D_F x M", ha="center", va="top", fontsize=8)
        _arrow(ax, 2.7, 3.3, 1.0)
        x = 3.5
        for f in filters:
            size = f.get("size", 0.75)
            _slab(ax, x, 0.6, size, size, f["depth"], f["color"])
            x += size + 0.22 + 0.18 * f["depth"]
        ax.text(3.5, -0.25, caption, ha="left", va="top", fontsize=8)
        _arrow(ax, x + 0.1, x + 0.7, 1.0)
        ox = x + 0.9
        _slab(ax, ox, 0.2, 1.6, 1.6, out_depth, list(out_colors))
        ax.text(
            ox + 1.1,
            -0.25,
            "output\nD_F x D_F x " + ("N" if out_depth == N else "M"),
            ha="center",
            va="top",
            fontsize=8,
        )
    fig.suptitle(
        "A depthwise separable convolution = depthwise, then pointwise: k² M D_F² + M N D_F² multiply-adds",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


DRAWINGS = {"separable_filters.png": draw_separable}  # each returns its figure (for the legibility test)
FIGURES = {"separable_filters.png": fig_separable}
