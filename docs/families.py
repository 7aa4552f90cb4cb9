"""MobileNet among other families: the papers' comparison tables, recounted where our counter can.

VGG16, GoogLeNet, AlexNet and SqueezeNet are written here as the layers that cost something,
each a ``mobilenet_arch.Conv`` or ``Linear`` fed to ``mobilenet.summary.layer_rows`` (the counter
behind ``mobilenet summary``) with the shape it sees; pooling only changes that shape. They are
for counting, not models one can run. Accuracies are the papers', with the table they come from.
"""

from __future__ import annotations

from perf_figures import PUBLISHED_TOP1, _marker_box, _md, _place_label, _plain_log_ticks  # beside this file

import mobilenet_arch as A
from mobilenet.summary import conv_output_size, layer_rows, summary_dict, totals

# ImageNet top-1 (%), M mult-adds and M parameters as printed in: the V1 paper (Howard et al.
# 2017, arXiv:1704.04861) Tables 8 and 9, and the V2 paper (Sandler et al. 2018, arXiv:1801.04381)
# Table 4; the V3 paper (Howard et al. 2019, arXiv:1905.02244, its final version) Table 3.
PAPERS = {
    "VGG16": (71.5, 15300, 138, "V1 paper, Table 8"),
    "GoogLeNet": (69.8, 1550, 6.8, "V1 paper, Table 8"),
    "AlexNet": (57.2, 720, 60, "V1 paper, Table 9"),
    "SqueezeNet": (57.5, 1700, 1.25, "V1 paper, Table 9"),
    "MobileNetV1-1.0/224": (70.6, 569, 4.2, "V1 paper, Table 8"),
    "MobileNetV1-0.5/160": (60.2, 76, 1.32, "V1 paper, Table 9"),
    "ShuffleNet 1.5x": (71.5, 292, 3.4, "V2 paper, Table 4"),
    "ShuffleNet 2x": (73.7, 524, 5.4, "V2 paper, Table 4"),
    "NASNet-A": (74.0, 564, 5.3, "V2 paper, Table 4"),
    "MobileNetV2-1.0/224": (72.0, 300, 3.4, "V2 paper, Table 4"),
    "MobileNetV2-1.4/224": (74.7, 585, 6.9, "V2 paper, Table 4"),
    "MnasNet-A1": (75.2, 315, 3.9, "V3 paper, Table 3"),
    "ProxylessNAS": (74.6, 320, 4.0, "V3 paper, Table 3"),
    "MobileNetV3-Large-1.0/224": (75.2, 219, 5.4, "V3 paper, Table 3"),
    "MobileNetV3-Small-1.0/224": (67.4, 56, 2.5, "V3 paper, Table 3"),
}
# the V2 paper's Table 4 also times its models: ms per image on one large core of a Google
# Pixel 1 phone (TF-Lite); ShuffleNet has no time there
PHONE_MS = {
    "NASNet-A": 183,
    "MobileNetV2-1.4/224": 143,
    "MobileNetV1-1.0/224": 113,
    "MobileNetV2-1.0/224": 75,
}
MOBILENETS = {  # the MobileNets above, as (arch, width, resolution) for `mobilenet summary`
    "MobileNetV1-1.0/224": ("v1", 1.0, 224),
    "MobileNetV1-0.5/160": ("v1", 0.5, 160),
    "MobileNetV2-1.0/224": ("v2", 1.0, 224),
    "MobileNetV2-1.4/224": ("v2", 1.4, 224),
    "MobileNetV3-Large-1.0/224": ("v3-large", 1.0, 224),
    "MobileNetV3-Small-1.0/224": ("v3-small", 1.0, 224),
}


class _Net:
    """Layers applied in turn to a (C, H, W) shape; ``rows`` collects what the counter says."""

    def __init__(self, resolution=224, channels=3):
        self.shape, self.rows = (channels, resolution, resolution), []

    def conv(self, cout, k, stride=1, groups=1, padding=None):
        c, h, w = self.shape
        spec = A.Conv(c, cout, k, stride, groups, bias=True)
        pad = spec.padding if padding is None else padding
        rows = layer_rows(spec, (c, h + 2 * (pad - spec.padding), w + 2 * (pad - spec.padding)))
        self.rows += rows
        self.shape = rows[-1].output_shape
        return self

    def pool(self, k, stride, ceil=True):
        """A max pool (no cost): torchvision's ceil_mode for GoogLeNet and SqueezeNet."""
        c, h, w = self.shape
        side = -(-(h - k) // stride) + 1 if ceil else conv_output_size(h, k, stride, 0)
        self.shape = (c, side, side)
        return self

    def branches(self, *convs):
        """Parallel branches on one input, concatenated; each a list of (cout, k)."""
        start, out = self.shape, 0
        for branch in convs:
            self.shape = start
            for cout, k in branch:
                self.conv(cout, k)
            out += self.shape[0]
        self.shape = (out, *start[1:])
        return self

    def linear(self, cout):
        n = self.shape[0] * self.shape[1] * self.shape[2] if len(self.shape) == 3 else self.shape[0]
        self.rows += layer_rows(A.Linear(n, cout), (n,))
        self.shape = (cout,)
        return self

    def gap(self):
        self.shape = (self.shape[0], 1, 1)
        return self


def vgg16(resolution=224) -> list:
    """Simonyan and Zisserman 2014, configuration D: 13 3x3 convolutions, 3 linear layers."""
    net = _Net(resolution)
    for cout, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(n):
            net.conv(cout, 3)
        net.pool(2, 2, ceil=False)
    return net.linear(4096).linear(4096).linear(1000).rows


# GoogLeNet's inception modules (Szegedy et al. 2014, Table 1): #1x1, #3x3 reduce, #3x3,
# #5x5 reduce, #5x5, pool proj
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet(resolution=224) -> list:
    """Inference network, without the two auxiliary classifiers used in training."""
    net = _Net(resolution).conv(64, 7, 2).pool(3, 2).conv(64, 1).conv(192, 3).pool(3, 2)
    for name, (c1, r3, c3, r5, c5, proj) in INCEPTION.items():
        net.branches([(c1, 1)], [(r3, 1), (c3, 3)], [(r5, 1), (c5, 5)], [(proj, 1)])
        if name in ("3b", "4e"):
            net.pool(3, 2)
    return net.gap().linear(1000).rows


def alexnet(resolution=224) -> list:
    """Krizhevsky et al. 2012 as published: conv2, conv4 and conv5 split over two GPUs (groups=2)."""
    net = _Net(resolution).conv(96, 11, 4, padding=2).pool(3, 2, ceil=False)
    net.conv(256, 5, groups=2).pool(3, 2, ceil=False).conv(384, 3).conv(384, 3, groups=2)
    net.conv(256, 3, groups=2).pool(3, 2, ceil=False)
    return net.linear(4096).linear(4096).linear(1000).rows


def squeezenet(resolution=224) -> list:
    """Iandola et al. 2016, version 1.0: fire modules (squeeze 1x1, then 1x1 and 3x3 expands)."""
    net = _Net(resolution).conv(96, 7, 2, padding=0).pool(3, 2)
    fires = (
        (16, 64),
        (16, 64),
        (32, 128),
        "pool",
        (32, 128),
        (48, 192),
        (48, 192),
        (64, 256),
        "pool",
        (64, 256),
    )
    for fire in fires:
        if fire == "pool":
            net.pool(3, 2)
            continue
        squeeze, expand = fire
        net.conv(squeeze, 1).branches([(expand, 1)], [(expand, 3)])
    return net.conv(1000, 1).gap().rows


COUNTED = {"VGG16": vgg16, "GoogLeNet": googlenet, "AlexNet": alexnet, "SqueezeNet": squeezenet}


def counts() -> dict:
    """{model: (M mult-adds, M params)} by our counter, for every model we can write down."""
    out = {}
    for name, build in COUNTED.items():
        t = totals(build())
        out[name] = (t["macs"] / 1e6, t["params"] / 1e6)
    for name, (arch, w, r) in MOBILENETS.items():
        d = summary_dict(arch, w, r)
        out[name] = (d["macs"] / 1e6, d["params"] / 1e6)
    return out


def families_table() -> str:
    """Every model of the papers' comparison tables: its top-1 and costs as printed, and ours."""
    ours = counts()
    rows = []
    for name, (top1, macs, params, source) in sorted(PAPERS.items(), key=lambda kv: -kv[1][1]):
        m, p = ours.get(name, (None, None))
        rows.append(
            (
                name,
                f"{top1:.1f}",
                f"{macs:,}",
                "-" if m is None else f"{m:,.0f}",
                f"{params:g}",
                "-" if p is None else f"{p:.2f}",
                source,
            )
        )
    header = ("model", "top-1 %", "M mult-adds, paper", "ours", "M params, paper", "ours", "source")
    far = [
        f"{n}'s {what} ({mine:,.2f} M here, {paper:,} M printed: {paper / mine:.2f}x)"
        for n in ours
        for what, mine, paper in (
            ("mult-adds", ours[n][0], PAPERS[n][1]),
            ("parameters", ours[n][1], PAPERS[n][2]),
        )
        if not 0.9 <= paper / mine <= 1.1
    ]
    note = (
        "\n\nTop-1 and the paper columns as the cited table prints them (ImageNet, single crop);"
        " 'ours' is `mobilenet.summary`'s counter (convolutions and linear layers, biases"
        " included) at 224 px, 160 px for MobileNetV1-0.5. ShuffleNet and the searched networks (NASNet-A,"
        " MnasNet-A1, ProxylessNAS) are not recounted."
    )
    if far:
        note += " More than 10% from the paper: " + "; ".join(far) + "."
    return _md(header, rows) + note


def _times(a: float, b: float) -> str:
    """``a`` against ``b`` as "3.1x fewer", "2.0x more" or "about as many"."""
    r = a / b
    if 0.95 <= r <= 1.05:
        return "about as many"
    return f"{r:.1f}x fewer" if r > 1 else f"{1 / r:.1f}x more"


def families_findings() -> str:
    """For each other family: the cheapest MobileNet of these tables at least as accurate."""
    ours = counts()
    macs = {n: ours[n][0] if n in ours else PAPERS[n][1] for n in PAPERS}
    params = {n: ours[n][1] if n in ours else PAPERS[n][2] for n in PAPERS}
    rows = []
    for rival in sorted((n for n in PAPERS if n not in MOBILENETS), key=lambda n: -macs[n]):
        top1 = PAPERS[rival][0]
        cheaper = [n for n in MOBILENETS if PAPERS[n][0] >= top1]
        best = min(cheaper, key=lambda n: macs[n])
        rows.append(
            (
                f"{rival} ({top1:.1f}%)",
                f"{best} ({PAPERS[best][0]:.1f}%)",
                f"{_times(macs[rival], macs[best])}",
                f"{_times(params[rival], params[best])}",
            )
        )
    header = ("other family", "cheapest MobileNet at least as accurate", "mult-adds", "parameters")
    return _md(header, rows)


def fig_families(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = counts()
    macs = {n: ours[n][0] if n in ours else PAPERS[n][1] for n in PAPERS}
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set_xscale("log")
    ax.set_xlim(35, 30000)
    ax.set_ylim(49, 78)
    groups = {
        "MobileNetV1": ("tab:blue", "o"),
        "MobileNetV2": ("tab:green", "s"),
        "MobileNetV3": ("tab:purple", "D"),
        "other families": ("tab:gray", "^"),
    }
    placed = [_marker_box(ax, (macs[n], PAPERS[n][0])) for n in PAPERS]
    for group, (color, marker) in groups.items():
        names = (
            [n for n in PAPERS if n.startswith(group)]
            if group != "other families"
            else [n for n in PAPERS if not n.startswith("MobileNet")]
        )
        ax.scatter(
            [macs[n] for n in names], [PAPERS[n][0] for n in names], color=color, marker=marker, label=group
        )
    curves = (("v1", "tab:blue", "V1 paper Table 6"), ("v2", "tab:green", "TF-slim checkpoints"))
    for arch, color, source in curves:
        widths = sorted(w for a, w, r in PUBLISHED_TOP1 if a == arch and r == 224)
        xs = [summary_dict(arch, w, 224)["macs"] / 1e6 for w in widths]
        ys = [PUBLISHED_TOP1[(arch, w, 224)] for w in widths]
        ax.plot(xs, ys, color=color, lw=0.8, alpha=0.6, label=f"{arch.upper()}, alpha at 224 px ({source})")
    for n in PAPERS:
        _place_label(ax, n.replace("MobileNet", "MN"), (macs[n], PAPERS[n][0]), placed)
    _plain_log_ticks(ax.xaxis, (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000))
    ax.set_xlabel(
        "M mult-adds per image (log): recounted here where the model is written down, else the paper's"
    )
    ax.set_ylabel("ImageNet top-1 % (papers)")
    ax.set_title("Accuracy against arithmetic across families")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def families_phone() -> str:
    """The V2 paper's own times: two models of about the same mult-adds, far apart in time."""
    a, b = "NASNet-A", "MobileNetV2-1.4/224"
    return (
        f"{a} and {b} have about the same mult-adds ({PAPERS[a][1]} M and {PAPERS[b][1]} M as printed),"
        f" and the V2 paper times them at {PHONE_MS[a]} ms and {PHONE_MS[b]} ms per image on one core of a"
        f" Pixel 1 phone ({PHONE_MS[a] / PHONE_MS[b]:.2f}x; its Table 4)."
    )


TABLES = {
    "families_table": families_table,
    "families_findings": families_findings,
    "families_phone": families_phone,
}
FIGURES = {"families.png": fig_families}
