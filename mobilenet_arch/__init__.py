"""The MobileNet architectures as data: the single source of truth.

The NumPy model (``numpy_impl``), the PyTorch model (``torch_impl``), the
``mobilenet summary`` table and the docs are all built by walking the tree of
layer specs returned by :func:`v1_spec`, :func:`v2_spec`, :func:`v3_large_spec`,
:func:`v3_small_spec` and :func:`ssdlite_spec`. Child names are chosen so that the
parameter names of the built models are exactly those of torchvision's ``mobilenet_v2``
and ``mobilenet_v3_large/small`` (``features.3.conv.1.0.weight``...).

A spec is a tree of frozen dataclasses: leaves (:class:`Conv`, :class:`BatchNorm`,
:class:`Act`, :class:`Dropout`, :class:`Pool`, :class:`Linear`), containers
(:class:`Seq`, :class:`Block`) and MobileNetV3's :class:`SqueezeExcite`.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass

MIN_RESOLUTION = 32  # five stride-2 stages: 32 px is the smallest input that stays >= 1x1


@dataclass(frozen=True)
class Conv:
    """2-D convolution, ``padding = (kernel_size - 1) // 2`` ("same" for odd kernels)."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    groups: int = 1
    bias: bool = False

    @property
    def padding(self) -> int:
        return (self.kernel_size - 1) // 2


@dataclass(frozen=True)
class BatchNorm:
    num_features: int
    eps: float = 1e-5
    momentum: float = 0.1


@dataclass(frozen=True)
class Act:
    kind: str  # "relu" or "relu6"


@dataclass(frozen=True)
class Dropout:
    p: float


@dataclass(frozen=True)
class Pool:
    """Global average pooling then flatten: (N, C, H, W) -> (N, C)."""


@dataclass(frozen=True)
class Linear:
    in_features: int
    out_features: int


@dataclass(frozen=True)
class Seq:
    """Children applied in order; ``children`` is a tuple of (name, spec)."""

    children: tuple

    def __iter__(self):
        return iter(self.children)


@dataclass(frozen=True)
class Block:
    """An inverted residual: ``conv(x) + x`` if ``residual`` else ``conv(x)``.

    The body is stored under the child name ``body``: ``conv`` in torchvision's MobileNetV2,
    ``block`` in its MobileNetV3.
    """

    conv: Seq
    residual: bool
    body: str = "conv"


@dataclass(frozen=True)
class SqueezeExcite:
    """Squeeze-and-excite (Hu et al. 2018) as MobileNetV3 places it after the depthwise conv:
    ``x * hardsigmoid(fc2(relu(fc1(mean over H, W of x))))``, ``fc1`` and ``fc2`` 1x1
    convolutions with bias acting on the pooled (C, 1, 1) map: one scale per channel."""

    fc1: Conv
    fc2: Conv

    def __iter__(self):
        return iter((("fc1", self.fc1), ("fc2", self.fc2)))


def _seq(*layers) -> Seq:
    """A Seq whose children are named "0", "1", ... like ``nn.Sequential``."""
    return Seq(tuple((str(i), layer) for i, layer in enumerate(layers)))


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act="relu6") -> Seq:
    return _seq(Conv(cin, cout, k, stride, groups), BatchNorm(cout), Act(act))


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never down by more than 10%.

    torchvision's ``_make_divisible`` (from the TF-slim MobileNetV2 code).
    """
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


MAX_WIDTH_MULT = 100.0  # far beyond any published model; keeps channel counts (and their int casts) finite


def _check_common(width_mult, num_classes, dropout):
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)):
        raise TypeError(f"width_mult must be a number, got {type(width_mult).__name__}")
    if not 0 < width_mult <= MAX_WIDTH_MULT:  # also refuses inf and nan
        raise ValueError(f"width_mult must be in (0, {MAX_WIDTH_MULT}], got {width_mult}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"dropout must be a number, got {type(dropout).__name__}")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")


# MobileNetV1, paper Table 1: (pointwise output channels, depthwise stride) of the
# 13 depthwise-separable layers. The paper prints s2 for the last depthwise layer,
# but its input and output are both 7x7; Keras and timm use stride 1, as do we.
V1_LAYERS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)

# MobileNetV2, paper Table 2: expansion t, output channels c, repeats n, first stride s.
V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def v1_spec(width_mult=1.0, num_classes=1000, dropout=1e-3, act="relu", separable=True) -> Seq:
    """MobileNetV1 (Howard et al. 2017, Table 1) with width multiplier ``width_mult``.

    Channels are ``int(c * width_mult)`` (at least 1) as in Keras. Every conv is
    followed by BN and ReLU (the paper's activation). Default dropout 1e-3 is Keras's.
    ``separable=False``: the paper's Table 4 baseline, each depthwise + pointwise pair
    replaced by one full 3x3 convolution ("Conv MobileNet").
    """
    _check_common(width_mult, num_classes, dropout)
    if act not in ("relu", "relu6"):
        raise ValueError(f"act must be 'relu' or 'relu6', got {act!r}")
    if not isinstance(separable, bool):
        raise TypeError(f"separable must be True or False, got {separable!r}")

    def ch(c):
        return max(1, int(c * width_mult))

    cin = ch(32)
    features = [conv_bn_act(3, cin, 3, stride=2, act=act)]
    for c, s in V1_LAYERS:
        cout = ch(c)
        if not separable:
            features.append(conv_bn_act(cin, cout, 3, stride=s, act=act))
            cin = cout
            continue
        features.append(
            _seq(
                conv_bn_act(cin, cin, 3, stride=s, groups=cin, act=act),  # depthwise
                conv_bn_act(cin, cout, 1, act=act),  # pointwise
            )
        )
        cin = cout
    return Seq(
        (
            ("features", _seq(*features)),
            ("pool", Pool()),
            ("classifier", _seq(Dropout(dropout), Linear(cin, num_classes))),
        )
    )


def inverted_residual(cin: int, cout: int, stride: int, expand_ratio: int, linear: bool = True) -> Block:
    """MobileNetV2 block (paper Table 1): expand 1x1 -> depthwise 3x3 -> linear 1x1.
    ``linear=False``: a ReLU6 after the projection too (the paper's Figure 6a ablation)."""
    hidden = int(round(cin * expand_ratio))
    layers = []
    if expand_ratio != 1:
        layers.append(conv_bn_act(cin, hidden, 1))
    layers += [
        conv_bn_act(hidden, hidden, 3, stride=stride, groups=hidden),
        Conv(hidden, cout, 1),  # linear bottleneck: no activation
        BatchNorm(cout),
    ]
    if not linear:
        layers.append(Act("relu6"))
    return Block(_seq(*layers), residual=stride == 1 and cin == cout)


V2_SHORTCUTS = ("bottleneck", "expansion", "none")


def v2_spec(
    width_mult=1.0,
    num_classes=1000,
    dropout=0.2,
    round_nearest=8,
    linear_bottleneck=True,
    shortcut="bottleneck",
) -> Seq:
    """MobileNetV2 (Sandler et al. 2018, Table 2) with torchvision's channel rounding.
    ``linear_bottleneck=False``: ReLU6 after every block's projection (paper Figure 6a).
    ``shortcut``: where the residual connections go (paper Figure 6b): between the thin
    bottlenecks (the paper's design), between the expanded tensors, or nowhere. The layers and
    their costs are the same in all three."""
    _check_common(width_mult, num_classes, dropout)
    if not isinstance(linear_bottleneck, bool):
        raise TypeError(f"linear_bottleneck must be True or False, got {linear_bottleneck!r}")
    if shortcut not in V2_SHORTCUTS:
        raise ValueError(f"shortcut must be one of {', '.join(V2_SHORTCUTS)}, got {shortcut!r}")
    if isinstance(round_nearest, bool) or not isinstance(round_nearest, int) or round_nearest < 1:
        raise ValueError(f"round_nearest must be an int >= 1, got {round_nearest!r}")
    cin = make_divisible(32 * width_mult, round_nearest)
    # The last conv is not thinned below 1280 (paper section 5.1).
    last = make_divisible(1280 * max(1.0, width_mult), round_nearest)
    features = [conv_bn_act(3, cin, 3, stride=2)]
    for t, c, n, s in V2_SETTING:
        cout = make_divisible(c * width_mult, round_nearest)
        for i in range(n):
            block = inverted_residual(cin, cout, s if i == 0 else 1, t, linear_bottleneck)
            features.append(block if shortcut == "bottleneck" else Block(block.conv, residual=False))
            cin = cout
    features.append(conv_bn_act(cin, last, 1))
    if shortcut == "expansion":
        features = _shortcuts_between_expansions(features)
    return Seq(
        (
            ("features", _seq(*features)),
            ("pool", Pool()),
            ("classifier", _seq(Dropout(dropout), Linear(last, num_classes))),
        )
    )


def _shortcuts_between_expansions(features: list) -> list:
    """The same layers cut at the expanded tensors instead of the bottlenecks: each block runs
    from after one expansion (the stem for the first) through the next expansion (the last 1x1
    conv for the last), so a residual, where the shapes allow it, joins two expanded tensors."""
    stem, *blocks, last = features

    def expands(layer) -> bool:  # a 1x1 conv + BN + act Seq (a depthwise one has groups > 1)
        return isinstance(layer, Seq) and layer.children[0][1].kernel_size == 1

    units = [[c for _, c in b.conv] for b in blocks]
    out, cin = [stem], stem.children[0][1].out_channels
    for i, unit in enumerate(units):
        body = unit[1:] if expands(unit[0]) else unit  # depthwise, project conv, BN [, act]
        nxt = units[i + 1][0] if i + 1 < len(units) and expands(units[i + 1][0]) else last
        cout = nxt.children[0][1].out_channels
        out.append(Block(_seq(*body, nxt), residual=body[0].children[0][1].stride == 1 and cin == cout))
        cin = cout
    return out


# MobileNetV3 (Howard et al. 2019), Tables 1 (Large) and 2 (Small), one row per bneck:
# input channels, depthwise kernel, expansion size, output channels, squeeze-and-excite,
# activation ("RE" ReLU, "HS" hard-swish), stride. The same rows as torchvision's.
V3_LARGE = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)
V3_SMALL = (
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
)
V3_LAST = {"large": 1280, "small": 1024}  # the classifier's hidden layer (before width)
V3_BN = {"eps": 1e-3, "momentum": 0.01}  # torchvision's (TF's) batch norm settings for V3


def _v3_cba(cin, cout, k, stride=1, groups=1, act="hardswish") -> Seq:
    return _seq(Conv(cin, cout, k, stride, groups), BatchNorm(cout, **V3_BN), Act(act))


def bneck(cin: int, k: int, exp: int, cout: int, se: bool, act: str, stride: int) -> Block:
    """MobileNetV3's block: the inverted residual (expand 1x1, depthwise kxk, linear 1x1) with
    an optional squeeze-and-excite after the depthwise conv; channels already width-adjusted."""
    act = {"RE": "relu", "HS": "hardswish"}[act]
    layers = []
    if exp != cin:
        layers.append(_v3_cba(cin, exp, 1, act=act))
    layers.append(_v3_cba(exp, exp, k, stride, groups=exp, act=act))
    if se:
        squeeze = make_divisible(exp // 4, 8)
        layers.append(SqueezeExcite(Conv(exp, squeeze, 1, bias=True), Conv(squeeze, exp, 1, bias=True)))
    layers.append(_seq(Conv(exp, cout, 1), BatchNorm(cout, **V3_BN)))  # linear: no activation
    return Block(_seq(*layers), residual=stride == 1 and cin == cout, body="block")


def _v3_spec(size, width_mult, num_classes, dropout) -> Seq:
    _check_common(width_mult, num_classes, dropout)

    def ch(c):
        return make_divisible(c * width_mult, 8)

    rows = V3_LARGE if size == "large" else V3_SMALL
    features = [_v3_cba(3, ch(rows[0][0]), 3, stride=2)]
    for cin, k, exp, cout, se, act, stride in rows:
        features.append(bneck(ch(cin), k, ch(exp), ch(cout), se, act, stride))
    last_in = ch(rows[-1][3])
    features.append(_v3_cba(last_in, 6 * last_in, 1))
    hidden = ch(V3_LAST[size])
    return Seq(
        (
            ("features", _seq(*features)),
            ("pool", Pool()),
            (
                "classifier",
                _seq(
                    Linear(6 * last_in, hidden),
                    Act("hardswish"),
                    Dropout(dropout),
                    Linear(hidden, num_classes),
                ),
            ),
        )
    )


def v3_large_spec(width_mult=1.0, num_classes=1000, dropout=0.2) -> Seq:
    """MobileNetV3-Large (Howard et al. 2019, Table 1) with torchvision's channel rounding."""
    return _v3_spec("large", width_mult, num_classes, dropout)


def v3_small_spec(width_mult=1.0, num_classes=1000, dropout=0.2) -> Seq:
    """MobileNetV3-Small (Howard et al. 2019, Table 2) with torchvision's channel rounding."""
    return _v3_spec("small", width_mult, num_classes, dropout)


SSDLITE_TAP = 14  # features[14]: the first block of the 160-channel stage ("layer 15", stride 16)
SSDLITE_EXTRAS = (512, 256, 256, 128)  # torchvision's SSDLite extra layers (stride 64, 128, 256, 512)
SSDLITE_ANCHORS = 6  # default boxes per cell: two squares, aspect ratios 2 and 3 and their inverses


def ssdlite_spec(width_mult=1.0, num_classes=7, extras=SSDLITE_EXTRAS, anchors=SSDLITE_ANCHORS) -> Seq:
    """SSDLite on MobileNetV2 (Sandler et al. 2018, section 6.2): ``num_classes`` counts the
    background (class 0), as torchvision's detectors do.

    - ``body1``: features[0:14] and the expansion (1x1 conv, BN, ReLU6) of features[14]: the first
      prediction layer reads that expansion output, at output stride 16.
    - ``body2``: the rest of features[14] (depthwise 3x3 stride 2, BN, ReLU6, linear 1x1, BN) and
      features[15:19]: the second prediction layer reads the last feature layer, stride 32.
    - ``extras``: stride-2 depthwise separable blocks (1x1 to half the width, depthwise 3x3 stride
      2, 1x1 to the width, each with BN and ReLU6), one more prediction layer each.
    - ``cls``, ``reg``: one head per prediction layer, a depthwise 3x3 conv + BN + ReLU6 then a 1x1
      conv with bias to ``anchors * num_classes`` (class logits) or ``anchors * 4`` (box regressions).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (the background and a class), got {num_classes!r}")
    if not extras or not all(isinstance(c, int) and c >= 2 for c in extras):
        raise ValueError(f"extras must be channel counts >= 2 (one per extra layer), got {extras!r}")
    if isinstance(anchors, bool) or not isinstance(anchors, int) or anchors < 1:
        raise ValueError(f"anchors must be an int >= 1, got {anchors!r}")
    features = list(dict(v2_spec(width_mult, num_classes=2).children)["features"])  # (name, spec)
    tap = features[SSDLITE_TAP][1].conv.children  # expand, depthwise, project conv, project BN
    body1 = Seq((*features[:SSDLITE_TAP], (str(SSDLITE_TAP), tap[0][1])))
    rest = Seq(tap[1:])
    body2 = Seq((("0", rest), *((str(i + 1), f) for i, (_, f) in enumerate(features[SSDLITE_TAP + 1 :]))))
    hidden = tap[0][1].children[0][1].out_channels
    last = features[-1][1].children[0][1].out_channels
    blocks, cin = [], last
    for c in extras:
        mid = c // 2
        blocks.append(
            _seq(
                conv_bn_act(cin, mid, 1),
                conv_bn_act(mid, mid, 3, stride=2, groups=mid),
                conv_bn_act(mid, c, 1),
            )
        )
        cin = c
    taps = (hidden, last, *extras)

    def head(c, out):
        return _seq(conv_bn_act(c, c, 3, groups=c), Conv(c, out, 1, bias=True))

    return Seq(
        (
            ("body1", body1),
            ("body2", body2),
            ("extras", _seq(*blocks)),
            ("cls", _seq(*(head(c, anchors * num_classes) for c in taps))),
            ("reg", _seq(*(head(c, anchors * 4) for c in taps))),
        )
    )


def build_spec(arch: str, **kwargs) -> Seq:
    """``build_spec("v1", width_mult=0.5)``: the spec of any architecture in :data:`ARCHS`."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {tuple(ARCHS)}, got {arch!r}")
    params = inspect.signature(ARCHS[arch]).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"build_spec: {arch} takes {', '.join(params)}; got {', '.join(unknown)}")
    return ARCHS[arch](**kwargs)


# the architectures, by the name the CLI and configs use
ARCHS = {"v1": v1_spec, "v2": v2_spec, "v3-large": v3_large_spec, "v3-small": v3_small_spec}


def model_name(arch: str) -> str:
    """The name a reader knows: ``model_name("v3-small") == "MobileNetV3-Small"``."""
    version, _, size = str(arch).partition("-")
    return f"MobileNet{version.upper()}" + (f"-{size.capitalize()}" if size else "")


def walk(spec, prefix=""):
    """Yield ``(name, leaf_spec)`` for every leaf in execution order."""
    if isinstance(spec, Seq):
        for name, child in spec:
            yield from walk(child, f"{prefix}{name}.")
    elif isinstance(spec, Block):
        yield from walk(spec.conv, f"{prefix}{spec.body}.")
    elif isinstance(spec, SqueezeExcite):
        for name, child in spec:
            yield from walk(child, f"{prefix}{name}.")
    else:
        yield prefix.rstrip("."), spec


# --- transfer learning: the arguments both model classes check the same way ----------------


def frozen_stages(upto, n_stages: int) -> int:
    """How many leading feature stages ``freeze(upto)`` freezes: ``upto`` an int in
    [0, n_stages], or ``"features"`` for all of them."""
    if upto == "features":
        return n_stages
    if isinstance(upto, bool) or not isinstance(upto, numbers.Integral):
        raise TypeError(f"freeze: upto must be an int (leading feature blocks) or 'features', got {upto!r}")
    if not 0 <= upto <= n_stages:
        raise ValueError(f"freeze: upto must be in [0, {n_stages}] (the model's feature blocks), got {upto}")
    return int(upto)


def check_num_classes(fn: str, num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"{fn}: num_classes must be an int >= 1, got {num_classes!r}")
    return int(num_classes)
