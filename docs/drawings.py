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

import mobilenet_arch as A  # noqa: E402
from mobilenet.summary import layer_rows, totals  # noqa: E402

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
    every_tick, drawn = set(), set()  # tick labels exist for ticks outside the view too
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = (hi - lo) * 1e-9
            shown = ax.axison and axis.get_visible()
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                every_tick |= {id(tick.label1), id(tick.label2)}
                if shown and lo - span <= tick.get_loc() <= hi + span:
                    drawn |= {id(tick.label1), id(tick.label2)}
            if not shown:  # axis("off"), or a twin's hidden axis: its label is not drawn either
                every_tick |= {id(axis.label), id(axis.get_offset_text())}
    texts = [
        t
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip() and (id(t) not in every_tick or id(t) in drawn)
    ]
    boxes = [(t.get_text(), t.get_window_extent(renderer).padded(1)) for t in texts]  # touching counts
    return [
        (a, b)
        for i, (a, ba) in enumerate(boxes)
        for b, bb in boxes[i + 1 :]
        if ba.overlaps(bb) and ba.width > 0 and bb.width > 0
    ]


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


def draw_layouts():
    """One (C=3, H=2, W=3) tensor in NCHW and in NHWC memory, and what the depthwise kernel's
    innermost loop reads in each: a row of one channel, or the channels of one pixel."""
    C, H, W = 3, 2, 3
    fig, axes = plt.subplots(3, 1, figsize=(8.4, 5.6), gridspec_kw={"height_ratios": [1.5, 1, 1]})
    ax = axes[0]
    ax.set_xlim(0, 18)
    ax.set_ylim(-0.6, 3.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("the tensor x[c, h, w]: 3 channels of 2 x 3 pixels", loc="left", fontsize=10)
    for c in reversed(range(C)):
        ox, oy = 1 + 0.5 * c, 0.3 + 0.35 * c
        for h in range(H):
            for w in range(W):
                ax.add_patch(
                    Rectangle(
                        (ox + w, oy + (H - 1 - h)),
                        1,
                        1,
                        facecolor=CHANNEL_COLORS[c],
                        edgecolor="black",
                        lw=0.6,
                    )
                )
    for h in range(H):
        for w in range(W):
            ax.text(
                1.5 + w, 0.8 + (H - 1 - h), f"{h},{w}", ha="center", va="center", fontsize=7, color="white"
            )
    ax.text(
        7.5,
        1.4,
        "labels: h, w of each pixel\ncolours: the channel (blue 0, orange 1, green 2)",
        fontsize=8,
        va="center",
    )
    order = {
        "NCHW memory (torch's default): x[c, h, w] at c*H*W + h*W + w": [
            (c, h, w) for c in range(C) for h in range(H) for w in range(W)
        ],
        "NHWC memory (channels-last): x[c, h, w] at h*W*C + w*C + c": [
            (c, h, w) for h in range(H) for w in range(W) for c in range(C)
        ],
    }
    notes = [
        "versions 1-3: the inner loop walks one channel's row (w): contiguous at stride 1, "
        "every other element at stride 2",
        "versions 4-10: the inner loop walks one pixel's channels (c): contiguous for every "
        "stride and dilation, one SIMD lane per channel",
    ]
    for ax, (title, cells), note, run in zip(axes[1:], order.items(), notes, (range(0, 3), range(0, 3))):
        ax.set_xlim(-0.2, 18.2)
        ax.set_ylim(-1.6, 1.4)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, loc="left", fontsize=10)
        for i, (c, h, w) in enumerate(cells):
            ax.add_patch(Rectangle((i, 0), 1, 1, facecolor=CHANNEL_COLORS[c], edgecolor="black", lw=0.6))
            ax.text(i + 0.5, 0.5, f"{h},{w}", ha="center", va="center", fontsize=7, color="white")
        ax.add_patch(Rectangle((run.start, -0.08), len(run), 1.16, fill=False, edgecolor="black", lw=2.0))
        ax.text(0, -0.35, note, fontsize=8, va="top")
    fig.tight_layout()
    return fig


def legends_on_data(fig, drawn=False) -> list:
    """(axes title, what) for every legend drawn over a plotted point, line vertex, bar or
    marker of its own axes: a legend should sit where there is no data. ``drawn``: the figure
    was just drawn (by :func:`overlapping_text`), so its layout is known."""
    if not drawn:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        points = []
        for line in ax.get_lines():
            xy = line.get_xydata()
            if len(xy) and line.get_visible():
                points += [(line.get_label(), p) for p in line.get_transform().transform(xy)]
        for coll in ax.collections:
            offsets = coll.get_offsets()
            if len(offsets) and coll.get_visible():
                points += [(coll.get_label(), p) for p in coll.get_offset_transform().transform(offsets)]
        hits = {label for label, (x, y) in points if box.contains(x, y)}
        hits |= {
            patch.get_label() or "a bar"
            for patch in ax.patches
            if patch.get_visible() and patch.get_window_extent(renderer).overlaps(box)
        }
        found += [(ax.get_title() or "(untitled axes)", h) for h in sorted(hits)]
    return found


def _block_row(ax, title, tensors, ops, color, shortcut=True):
    """Tensors as bars whose height follows their channels, ops between them, the shortcut above."""
    ax.set_title(title, loc="left", fontsize=10)
    top = max(c for _, c in tensors)
    xs = [0.6 + 3.1 * i for i in range(len(tensors))]
    for x, (shape, c) in zip(xs, tensors):
        h = 0.6 + 2.4 * c / top
        ax.add_patch(Rectangle((x, 1.6 - h / 2), 0.7, h, facecolor=color, edgecolor="black", lw=0.6))
        ax.text(x + 0.35, -0.05, shape, ha="center", va="top", fontsize=8)
    for x0, x1, (op, style) in zip(xs, xs[1:], ops):
        ax.annotate(
            "", xy=(x1 - 0.1, 1.6), xytext=(x0 + 0.8, 1.6), arrowprops={"arrowstyle": "->", "lw": 1.0}
        )
        ax.text((x0 + x1) / 2 + 0.35, 1.75, op, ha="center", va="bottom", fontsize=8, style=style)
    if shortcut:
        a, b, y = xs[0] + 0.35, xs[-1] + 0.35, 3.5  # the shortcut: up, across, down into the sum
        ax.plot([a, a, b], [3.0, y, y], color="#444444", lw=1.0)
        ax.annotate(
            "", xy=(b, 3.0), xytext=(b, y), arrowprops={"arrowstyle": "->", "lw": 1.0, "color": "#444444"}
        )
        ax.text((a + b) / 2, y + 0.1, "+ x (shortcut)", ha="center", va="bottom", fontsize=8)
    ax.set_xlim(0, xs[-1] + 1.4)
    ax.set_ylim(-0.7, 4.4)
    ax.axis("off")


def draw_residuals():
    """ResNet's bottleneck block (wide - narrow - wide) beside MobileNetV2's inverted residual
    (narrow - wide - narrow, linear at the end), each with the shapes of one concrete layer."""
    fig, axes = plt.subplots(2, 1, figsize=(8.4, 5.4))
    _block_row(
        axes[0],
        "residual (ResNet-50, conv2_x): wide - narrow - wide, the shortcut joins the wide ends",
        [("56x56x256", 256), ("56x56x64", 64), ("56x56x64", 64), ("56x56x256", 256)],
        [("1x1 conv, ReLU", "normal"), ("3x3 conv, ReLU", "normal"), ("1x1 conv", "normal")],
        "#9ecae1",
    )
    _block_row(
        axes[1],
        "inverted residual (MobileNetV2, 28x28, t = 6): narrow - wide - narrow, "
        "the shortcut joins the bottlenecks",
        [("28x28x32", 32), ("28x28x192", 192), ("28x28x192", 192), ("28x28x32", 32)],
        [
            ("1x1 expand, ReLU6", "normal"),
            ("3x3 depthwise, ReLU6", "normal"),
            ("1x1 project, linear", "italic"),
        ],
        "#fdae6b",
    )
    fig.tight_layout()
    return fig


def draw_v3_block():
    """A MobileNetV3-Large block with squeeze-and-excite (the 28x28 stage, 5x5 depthwise):
    the main path's shapes, and the gate that the squeeze-and-excite branch computes from it."""
    fig, ax = plt.subplots(figsize=(9.6, 5.0))
    tensors = [("28x28x40", 40), ("28x28x120", 120), ("28x28x120", 120), ("28x28x120", 120), ("28x28x40", 40)]
    ops = ["1x1 expand, ReLU", "5x5 depthwise, ReLU", "x gate (per channel)", "1x1 project, linear"]
    xs = [0.6 + 3.0 * i for i in range(len(tensors))]
    y0 = 3.6  # the main path's centre line
    tops = []
    for x, (shape, c) in zip(xs, tensors):
        h = 0.5 + 2.0 * c / 120
        ax.add_patch(Rectangle((x, y0 - h / 2), 0.7, h, facecolor="#fdae6b", edgecolor="black", lw=0.6))
        tops.append(y0 + h / 2)
        label_y = y0 - h / 2 - 0.1 if x not in (xs[2], xs[3]) else y0 + h / 2 + 0.1
        ax.text(x + 0.35, label_y, shape, ha="center", va="top" if label_y < y0 else "bottom", fontsize=8)
    for x0, x1, op in zip(xs, xs[1:], ops):
        ax.annotate("", xy=(x1 - 0.1, y0), xytext=(x0 + 0.8, y0), arrowprops={"arrowstyle": "->", "lw": 1.0})
        ax.text((x0 + x1) / 2 + 0.35, y0 + 0.12, op, ha="center", va="bottom", fontsize=8)
    # the squeeze-and-excite branch, below the depthwise output and the gated map
    bx = [xs[2] - 1.2 + 1.9 * i for i in range(3)]
    by = 0.9
    sizes = [("1x1x120\nmean over H, W", 120), ("1x1x32\nfc1, ReLU", 32), ("1x1x120\nfc2, hard-sigmoid", 120)]
    for x, (label, c) in zip(bx, sizes):
        h = 0.2 + 0.8 * c / 120
        ax.add_patch(Rectangle((x, by - h / 2), 0.3, h, facecolor="#c6dbef", edgecolor="black", lw=0.6))
        ax.text(x + 0.15, by - 0.6, label, ha="center", va="top", fontsize=7)
    arrow = {"arrowstyle": "->", "lw": 0.8}
    ax.annotate("", xy=(bx[0] + 0.15, by + 0.55), xytext=(xs[2] + 0.35, y0 - 1.3), arrowprops=arrow)
    for a, b in zip(bx, bx[1:]):
        ax.annotate("", xy=(b - 0.05, by), xytext=(a + 0.35, by), arrowprops=arrow)
    ax.annotate("", xy=(xs[3] + 0.35, y0 - 1.3), xytext=(bx[2] + 0.15, by + 0.55), arrowprops=arrow)
    ax.text(bx[2] + 0.6, by, "the gate: one scale\nin [0, 1] per channel", fontsize=7, va="center")
    a, b = xs[0] + 0.35, xs[-1] + 0.35  # the shortcut, from the input's top into the sum
    top = max(tops) + 0.75
    ax.plot([a, a, b], [tops[0], top, top], color="#444444", lw=1.0)
    ax.annotate(
        "", xy=(b, tops[-1]), xytext=(b, top), arrowprops={"arrowstyle": "->", "lw": 1.0, "color": "#444444"}
    )
    ax.text((a + b) / 2, top + 0.08, "+ x (shortcut)", ha="center", va="bottom", fontsize=8)
    ax.set_title(
        "MobileNetV3-Large block with squeeze-and-excite (28x28 stage, expansion 120, 5x5 depthwise)",
        loc="left",
        fontsize=10,
    )
    ax.set_xlim(0, xs[-1] + 1.3)
    ax.set_ylim(-0.4, top + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    return fig


def draw_tile_halo():
    """One tile of the fused block at stride 1: a band of output rows, the input rows it needs
    (the band and a one-row halo on each side for the 3x3 depthwise), and the expanded rows,
    which exist for the tile only."""
    H, band, halo = 12, range(4, 8), 1  # rows shown; the tile's output rows; 3x3: one halo row
    need = range(band.start - halo, band.stop + halo)
    fig, ax = plt.subplots(figsize=(9.0, 5.2))
    cols = [
        (0.5, 1.0, "x: the block's input\n(H rows, C channels)"),
        (4.0, 3.0, "expanded: t*C channels\n(only the tile's rows)"),
        (9.0, 1.0, "output: the tile's rows\n(H rows, C channels)"),
    ]
    row_h = 0.32

    def y_of(r):
        return (H - 1 - r) * row_h

    for x, w, title in cols:
        ax.text(x + w / 2, y_of(0) + row_h + 0.15, title, ha="center", va="bottom", fontsize=8)
    for r in range(H):
        in_band, in_need = r in band, r in need
        face = "#fdae6b" if in_band else ("#fee6ce" if in_need else "white")
        ax.add_patch(
            Rectangle((cols[0][0], y_of(r)), cols[0][1], row_h, facecolor=face, edgecolor="black", lw=0.5)
        )
        ax.add_patch(
            Rectangle(
                (cols[2][0], y_of(r)),
                cols[2][1],
                row_h,
                facecolor="#fdae6b" if in_band else "white",
                edgecolor="black",
                lw=0.5,
            )
        )
        if in_need:
            ax.add_patch(
                Rectangle((cols[1][0], y_of(r)), cols[1][1], row_h, facecolor=face, edgecolor="black", lw=0.5)
            )
        else:
            ax.add_patch(
                Rectangle(
                    (cols[1][0], y_of(r)), cols[1][1], row_h, fill=False, edgecolor="0.75", lw=0.5, ls="--"
                )
            )
    mid_need = (y_of(need.start) + y_of(need.stop - 1) + row_h) / 2
    mid_band = (y_of(band.start) + y_of(band.stop - 1) + row_h) / 2
    arrow = {"arrowstyle": "->", "lw": 1.0}
    ax.annotate(
        "",
        xy=(cols[1][0] - 0.1, mid_need),
        xytext=(cols[0][0] + cols[0][1] + 0.1, mid_need),
        arrowprops=arrow,
    )
    ax.text(2.75, mid_need + 0.12, "1x1 expand\n(GEMM, ReLU6)", ha="center", va="bottom", fontsize=8)
    ax.annotate(
        "",
        xy=(cols[2][0] - 0.1, mid_band),
        xytext=(cols[1][0] + cols[1][1] + 0.1, mid_band),
        arrowprops=arrow,
    )
    ax.text(8.0, mid_band + 0.12, "3x3 depthwise,\n1x1 project, + x", ha="center", va="bottom", fontsize=8)
    ax.add_patch(Rectangle((0.5, -1.25), 0.35, 0.25, facecolor="#fdae6b", edgecolor="black", lw=0.5))
    ax.text(0.95, -1.125, "the tile's rows", va="center", fontsize=8)
    ax.add_patch(Rectangle((3.2, -1.25), 0.35, 0.25, facecolor="#fee6ce", edgecolor="black", lw=0.5))
    ax.text(3.65, -1.125, "halo: read by the depthwise, not written", va="center", fontsize=8)
    ax.add_patch(Rectangle((3.2, -1.7), 0.35, 0.25, fill=False, edgecolor="0.75", lw=0.5, ls="--"))
    ax.text(3.65, -1.575, "never expanded at the same time as this tile", va="center", fontsize=8)
    ax.set_title(
        "one tile of the fused inverted-residual block (stride 1, 3x3 depthwise)", loc="left", fontsize=10
    )
    ax.set_xlim(0, 10.5)
    ax.set_ylim(-1.9, y_of(0) + row_h + 0.9)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    return fig


def _macs(spec, shape) -> float:
    """Mult-adds of one layer (or Seq) on a (C, H, W) or (F,) input, in millions (the summary's counter)."""
    return totals(layer_rows(spec, shape))["macs"] / 1e6


def draw_v1_block():
    """MobileNetV1's separable layer beside the full 3x3 convolution it replaces, for the
    paper's second layer (112x112, 32 -> 64 channels), with each op's mult-adds."""
    c_in, c_out, hw = 32, 64, 112
    full = _macs(A.Conv(c_in, c_out, 3), (c_in, hw, hw))
    dw = _macs(A.Conv(c_in, c_in, 3, groups=c_in), (c_in, hw, hw))
    pw = _macs(A.Conv(c_in, c_out, 1), (c_in, hw, hw))
    fig, axes = plt.subplots(2, 1, figsize=(8.4, 5.0))
    _block_row(
        axes[0],
        f"a full 3x3 convolution (V1 paper Table 4's baseline): {full:.0f} M mult-adds",
        [(f"{hw}x{hw}x{c_in}", c_in), (f"{hw}x{hw}x{c_out}", c_out)],
        [(f"3x3 conv, BN, ReLU\n{full:.1f} M", "normal")],
        "#9ecae1",
        shortcut=False,
    )
    _block_row(
        axes[1],
        f"MobileNetV1's depthwise separable layer: {dw + pw:.1f} M mult-adds, {full / (dw + pw):.1f}x fewer",
        [(f"{hw}x{hw}x{c_in}", c_in), (f"{hw}x{hw}x{c_in}", c_in), (f"{hw}x{hw}x{c_out}", c_out)],
        [
            (f"3x3 depthwise, BN, ReLU\n{dw:.1f} M", "normal"),
            (f"1x1 pointwise, BN, ReLU\n{pw:.1f} M", "normal"),
        ],
        "#fdae6b",
        shortcut=False,
    )
    fig.tight_layout()
    return fig


def draw_v3_last_stage():
    """MobileNetV3-Large's last stage in V2's order (every 1x1 on the 7x7 map, then pool) and
    as V3 has it (pool after the 960-channel layer, so the 1280 layer acts on one vector)."""
    conv960 = _macs(A.Conv(160, 960, 1), (160, 7, 7))
    on_map = _macs(A.Conv(960, 1280, 1), (960, 7, 7))
    on_vec = _macs(A.Linear(960, 1280), (960,))
    head = _macs(A.Linear(1280, 1000), (1280,))
    fig, axes = plt.subplots(2, 1, figsize=(10.4, 5.2))
    _block_row(
        axes[0],
        f"MobileNetV3-Large's head in V2's order: {conv960 + on_map + head:.1f} M mult-adds after"
        " the last block",
        [("7x7x160", 160), ("7x7x960", 960), ("7x7x1280", 1280), ("1x1x1280", 1280), ("1000", 1000)],
        [
            (f"1x1 conv\n{conv960:.1f} M", "normal"),
            (f"1x1 conv\n{on_map:.1f} M", "normal"),
            ("pool", "italic"),
            (f"linear\n{head:.2f} M", "normal"),
        ],
        "#9ecae1",
        shortcut=False,
    )
    _block_row(
        axes[1],
        f"as V3 has it (paper section 5.1): {conv960 + on_vec + head:.1f} M; the 1280 layer is"
        f" {on_map / on_vec:.0f}x cheaper",
        [("7x7x160", 160), ("7x7x960", 960), ("1x1x960", 960), ("1280", 1280), ("1000", 1000)],
        [
            (f"1x1 conv\n{conv960:.1f} M", "normal"),
            ("pool", "italic"),
            (f"linear, h-swish\n{on_vec:.2f} M", "normal"),
            (f"linear\n{head:.2f} M", "normal"),
        ],
        "#fdae6b",
        shortcut=False,
    )
    fig.tight_layout()
    return fig


def _pixels(ax, x0, y0, rows, cols, lit, title, size=0.42):
    """A grid of ``rows`` x ``cols`` pixels (each one C-vector of an NHWC row); ``lit`` maps a
    (row, col) to a colour."""
    for r in range(rows):
        for c in range(cols):
            face = lit.get((r, c), "white")
            ax.add_patch(
                Rectangle(
                    (x0 + c * size, y0 - r * size), size, size, facecolor=face, edgecolor="black", lw=0.5
                )
            )
    ax.text(x0 + cols * size / 2, y0 + size + 0.12, title, ha="center", va="bottom", fontsize=8)


def draw_register_blocking():
    """What one step of depthwise versions 7 to 10 loads and computes (3x3, stride 1): the input
    pixels it reads (each a vector of C channels) and the output pixels it finishes."""
    fig, axes = plt.subplots(1, 4, figsize=(12.0, 3.8))
    read, out = "#c6dbef", "#fdae6b"
    steps = (  # version, output pixels (rows x cols), what the step does
        (7, 1, 1, "9 loads feed 9\nmultiply-adds"),
        (8, 2, 1, "two output rows share\ntheir middle input rows:\n12 loads, 18 multiply-adds"),
        (9, 2, 2, "2x2 outputs (C >= 128):\n16 loads, 36 multiply-adds"),
        (
            10,
            4,
            2,
            "four output rows from six input\nrows, P pixels' lanes at once\n(P*C ~ 256; P = 2 drawn)",
        ),
    )
    for ax, (v, orows, ocols, what) in zip(axes, steps):
        irows, icols = orows + 2, ocols + 2
        lit = {(r, c): read for r in range(irows) for c in range(icols)}
        _pixels(ax, 0.0, 3.0, 6, 4, lit, f"version {v}: input rows")
        olit = {(r + 1, c + 1): out for r in range(orows) for c in range(ocols)}
        _pixels(ax, 2.3, 3.0, 6, 4, olit, "output rows")
        ax.text(1.9, 0.0, what, ha="center", va="top", fontsize=8)
        ax.set_xlim(-0.2, 4.2)
        ax.set_ylim(-1.6, 4.1)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(
        "one step of the depthwise kernel, versions 7-10 (3x3, stride 1): blue is read, orange is finished;"
        " each square is one pixel's C channels, the SIMD lanes",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


DRAWINGS = {
    "separable_filters.png": draw_separable,
    "memory_layouts.png": draw_layouts,
    "residual_blocks.png": draw_residuals,
    "v3_block.png": draw_v3_block,
    "fused_tile.png": draw_tile_halo,
    "v1_block.png": draw_v1_block,
    "v3_last_stage.png": draw_v3_last_stage,
    "register_blocking.png": draw_register_blocking,
}  # each returns its figure (for the legibility test)


def _saver(draw):
    """A figure builder as make_figures wants one: ``build(path)`` draws and writes the PNG."""

    def build(path):
        fig = draw()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    return build


FIGURES = {name: _saver(draw) for name, draw in DRAWINGS.items()}
