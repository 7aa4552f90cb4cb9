"""Layer table, parameter count and multiply-adds of a spec, without building a model.

Multiply-adds count convolutions and the classifier only, as the papers do
(V1 paper section 3: "mult-adds"; BN, activations and pooling are left out).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mobilenet_arch as A


@dataclass
class Row:
    name: str
    type: str
    output_shape: tuple
    params: int
    macs: int


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """``floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1`` (torch.nn.Conv2d)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _leaf(name, spec, shape):
    """Return (row, output shape) of one leaf applied to ``shape`` = (C, H, W) or (F,)."""
    if isinstance(spec, A.Conv):
        c, h, w = shape
        ho = conv_output_size(h, spec.kernel_size, spec.stride, spec.padding)
        wo = conv_output_size(w, spec.kernel_size, spec.stride, spec.padding)
        k2 = spec.kernel_size**2
        params = spec.out_channels * (c // spec.groups) * k2 + (spec.out_channels if spec.bias else 0)
        macs = spec.out_channels * ho * wo * (c // spec.groups) * k2
        if spec.groups == 1:
            kind = "Conv1x1" if spec.kernel_size == 1 else f"Conv{spec.kernel_size}x{spec.kernel_size}"
        else:
            kind = f"DWConv{spec.kernel_size}x{spec.kernel_size}"
        if spec.stride > 1:
            kind += f"/s{spec.stride}"
        out = (spec.out_channels, ho, wo)
        return Row(name, kind, out, params, macs), out
    if isinstance(spec, A.BatchNorm):
        return Row(name, "BatchNorm", shape, 2 * spec.num_features, 0), shape
    if isinstance(spec, A.Act):
        kind = {"relu": "ReLU", "relu6": "ReLU6", "hardswish": "HardSwish", "hardsigmoid": "HardSigmoid"}
        return Row(name, kind.get(spec.kind, spec.kind), shape, 0, 0), shape
    if isinstance(spec, A.Dropout):
        return Row(name, f"Dropout(p={spec.p:g})", shape, 0, 0), shape
    if isinstance(spec, A.Pool):
        out = (shape[0],)
        return Row(name, "GlobalAvgPool", out, 0, 0), out
    if isinstance(spec, A.Linear):
        params = spec.in_features * spec.out_features + spec.out_features
        out = (spec.out_features,)
        return Row(name, "Linear", out, params, spec.in_features * spec.out_features), out
    raise TypeError(f"unknown spec leaf {spec!r}")


def _rows(spec, prefix: str, shape: tuple, rows: list) -> tuple:
    """Append the rows of ``spec``'s leaves (names as :func:`mobilenet_arch.walk` gives them);
    return its output shape."""
    if isinstance(spec, A.Seq):
        for name, child in spec:
            shape = _rows(child, f"{prefix}{name}.", shape, rows)
        return shape
    if isinstance(spec, A.Block):
        return _rows(spec.conv, f"{prefix}{spec.body}.", shape, rows)
    if isinstance(spec, A.SqueezeExcite):
        pooled = (shape[0], 1, 1)  # fc1 and fc2 act on the pooled map; the scale keeps x's shape
        for name, child in spec:
            pooled = _rows(child, f"{prefix}{name}.", pooled, rows)
        return shape
    row, shape = _leaf(prefix.rstrip("."), spec, shape)
    rows.append(row)
    return shape


def layer_rows(spec, shape: tuple) -> list[Row]:
    """One :class:`Row` per leaf of any spec (a model or one layer) for input ``shape`` (C, H, W).
    Multiply-adds of squeeze-and-excite count its two 1x1 convolutions on the pooled map (the
    pooling and the channel scale are left out, like BN and activations)."""
    rows = []
    _rows(spec, "", shape, rows)
    return rows


def summarize(spec, resolution: int = 224, in_channels: int = 3) -> list[Row]:
    """One :class:`Row` per leaf layer of a model for a square input of side ``resolution``."""
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise TypeError(f"resolution must be an int, got {type(resolution).__name__}")
    if resolution < A.MIN_RESOLUTION:
        raise ValueError(f"resolution must be >= {A.MIN_RESOLUTION}, got {resolution}")
    return layer_rows(spec, (in_channels, resolution, resolution))


def totals(rows) -> dict:
    return {"params": sum(r.params for r in rows), "macs": sum(r.macs for r in rows)}


def summary_dict(arch: str, width_mult: float = 1.0, resolution: int = 224, num_classes=1000) -> dict:
    """Everything ``mobilenet summary --json`` prints."""
    rows = summarize(A.build_spec(arch, width_mult=width_mult, num_classes=num_classes), resolution)
    return {
        "arch": arch,
        "width_mult": width_mult,
        "resolution": resolution,
        "num_classes": num_classes,
        **totals(rows),
        "layers": [{**asdict(r), "output_shape": list(r.output_shape)} for r in rows],
    }


def format_table(d: dict) -> str:
    """The human-readable table of :func:`summary_dict`'s output."""
    name = "SSDLite-MobileNetV2" if d["arch"] == "ssdlite" else A.model_name(d["arch"])
    lines = [
        f"{name}  width_mult={d['width_mult']:g}  resolution={d['resolution']}  classes={d['num_classes']}",
        f"{'layer':<28} {'type':<18} {'output shape':<16} {'params':>10} {'mult-adds':>13}",
        "-" * 89,
    ]
    for r in d["layers"]:
        shape = "x".join(map(str, r["output_shape"]))
        lines.append(f"{r['name']:<28} {r['type']:<18} {shape:<16} {r['params']:>10,} {r['macs']:>13,}")
    lines.append("-" * 89)
    lines.append(
        f"{'total':<64} {d['params']:>10,} {d['macs']:>13,}"
        f"\n{d['params'] / 1e6:.2f} M parameters, {d['macs'] / 1e6:.1f} M multiply-adds"
    )
    if "head_macs" in d:
        lines.append(
            f"prediction heads: {d['head_macs'] / 1e6:.1f} M multiply-adds; SSD's regular 3x3 heads "
            f"would take {d['regular_head_macs'] / 1e6:.1f} M "
            f"({d['regular_head_macs'] / d['head_macs']:.1f}x)"
        )
    return "\n".join(lines)


def ssdlite_summary(
    width_mult: float = 1.0, resolution: int = 320, num_classes: int = 91, **spec_kwargs
) -> dict:
    """SSDLite's layers, parameters and mult-adds for a square input, with its prediction heads
    set against SSD's (Liu et al. 2016): a regular 3x3 convolution per head where SSDLite has a
    depthwise 3x3 (+ BN, ReLU6) and a 1x1 (the V2 paper's comparison, section 6.2)."""
    spec = A.ssdlite_spec(width_mult, num_classes, **spec_kwargs)
    parts = dict(spec.children)
    summarize(parts["body1"], resolution)  # checks the resolution
    first = layer_rows(parts["body1"], (3, resolution, resolution))
    rows = [Row(f"body1.{r.name}", r.type, r.output_shape, r.params, r.macs) for r in first]
    taps = [rows[-1].output_shape]
    for part in ["body2", *(f"extras.{k}" for k, _ in parts["extras"])]:
        sub = parts["body2"] if part == "body2" else dict(parts["extras"].children)[part.split(".")[1]]
        new = layer_rows(sub, taps[-1])
        rows += [Row(f"{part}.{r.name}", r.type, r.output_shape, r.params, r.macs) for r in new]
        taps.append(new[-1].output_shape)
    heads, regular = 0, 0
    for kind in ("cls", "reg"):
        for (k, head), shape in zip(parts[kind], taps):
            new = layer_rows(head, shape)
            rows += [Row(f"{kind}.{k}.{r.name}", r.type, r.output_shape, r.params, r.macs) for r in new]
            heads += sum(r.macs for r in new)
            c, h, w = shape
            regular += new[-1].output_shape[0] * h * w * c * 9  # one 3x3 conv, c -> the same outputs
    return {
        "arch": "ssdlite",
        "width_mult": width_mult,
        "resolution": resolution,
        "num_classes": num_classes,
        **totals(rows),
        "head_macs": heads,
        "regular_head_macs": regular,
        "feature_maps": [list(s) for s in taps],
        "layers": [{**asdict(r), "output_shape": list(r.output_shape)} for r in rows],
    }


def activation_memory(
    arch: str, width_mult: float = 1.0, resolution: int = 224, itemsize: int = 4
) -> list[dict]:
    """Peak activation bytes of each ``features`` entry at batch 1, two ways.

    ``unfused``: each convolution's output is materialised (its batch norm and activation
    applied in place), and a tensor is freed after its last use; during a convolution its input,
    its output and, in a residual block, the block's input are alive.
    ``fused``: an inverted residual computed tile by tile (the V2 paper, section 5.1): only the
    block's input and output exist whole, the expanded tensor one tile at a time (not counted).
    Blocks that are not inverted residuals are the same both ways.
    """
    spec = A.build_spec(arch, width_mult=width_mult)
    shape = (3, resolution, resolution)
    summarize(spec, resolution)  # checks the resolution
    out = []
    for name, stage in dict(spec.children)["features"]:
        x = shape
        conv_outputs = []
        for r in layer_rows(stage, shape):
            if r.name.endswith(".fc2"):  # squeeze-and-excite: its output is its input, rescaled
                conv_outputs.append(conv_outputs[-1])
            elif r.type.startswith(("Conv", "DWConv")) and not r.name.endswith(".fc1"):
                conv_outputs.append(r.output_shape)
        shape = layer_rows(stage, shape)[-1].output_shape
        size = lambda s: s[0] * s[1] * s[2] * itemsize  # noqa: E731
        residual = isinstance(stage, A.Block) and stage.residual
        peak, prev = 0, x
        for i, o in enumerate(conv_outputs):
            keep = size(x) if residual and i > 0 else 0
            peak = max(peak, size(prev) + size(o) + keep)
            prev = o
        block = isinstance(stage, A.Block)
        out.append(
            {
                "name": f"features.{name}",
                "input": list(x),
                "output": list(shape),
                "hidden": max(c[0] for c in conv_outputs),
                "unfused": peak,
                "fused": size(x) + size(shape) if block else peak,
            }
        )
    return out
