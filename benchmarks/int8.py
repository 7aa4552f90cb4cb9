"""The int8 chapter's measurements: whole models on six sides, and the int8 kernels' road.

    python -m benchmarks.int8            # V2-1.0, V3-Large, V3-Small at 224 px, batch 1 and 8 (~10 min)
    python -m benchmarks.int8 --quick    # V2-1.0 at batch 1 only

Models: ``mobilenet bench``'s code, each side alone in its process (numba, numba-int8, torch,
torch-int8, onnxruntime, onnxruntime-int8), on one prepared model per case (batch-norm
statistics of real activations; the int8 sides share its integer model). Kernels: every
version of ``kernels.qgemm`` and ``kernels.qdepthwise`` on MobileNetV2-1.0/224's layer shapes,
in one process (Numba only; the model timings run in processes of their own, started by this
one while it idles). Also: the machine's ceilings (roofline), the integer model's time per kind
of layer (profile), the fused block's three ways (fusion) and V2 again with more rounds
(repeats). Writes ``benchmarks/results/int8.json`` (``--only PART ...`` reruns some parts).
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import numba
import numpy as np

import mobilenet_arch as A
import numpy_impl
from kernels import qdepthwise as QD
from kernels import qgemm as QG
from kernels import qops as QO
from mobilenet.deploy import bench as B
from mobilenet.deploy.cases import Case, calibration_images, inputs
from mobilenet.summary import summarize
from numpy_impl.quant.layers import QBlock, QConv
from numpy_impl.quant.model import quantize

from .timing import RESULTS

SIDES = ["numba", "numba-int8", "torch", "torch-int8", "onnxruntime", "onnxruntime-int8"]
ARCHS = ("v2", "v3-large", "v3-small")


def models(quick: bool, rounds: int) -> dict:
    cases = [Case(arch, 1.0, 224, batch) for arch in ARCHS for batch in (1, 8)]
    if quick:
        cases = cases[:1]
    return B.bench(cases, SIDES, rounds=rounds, threads=2, min_time=0.5 if quick else 1.0)


def _timed(fn, *args, reps=30) -> float:
    fn(*args)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def kernels() -> dict:
    """Every GEMM version on V2's pointwise shapes and every depthwise version on its depthwise
    ones (batch 1, 224 px), summed per version: GOP/s (two ops per multiply-add)."""
    numba.set_num_threads(2)
    rng = np.random.default_rng(0)
    spec = A.build_spec("v2")
    outs = {r.name: tuple(r.output_shape) for r in summarize(spec, 224)}
    shapes_pw, shapes_dw, prev = [], [], (3, 224, 224)
    for name, leaf in A.walk(spec):
        if isinstance(leaf, A.Conv) and leaf.kernel_size == 1:
            shapes_pw.append((prev, outs[name]))
        elif isinstance(leaf, A.Conv) and leaf.groups > 1:
            shapes_dw.append((prev, outs[name], leaf.stride))
        prev = outs.get(name, prev)
    out = {"gemm": {}, "depthwise": {}}
    for v, fn in QG.GEMMS.items():
        if v == 1:
            continue  # the plain loop: minutes per model; its speed is in the tests' small shapes
        total, macs = 0.0, 0
        for (cin, h, w), (cout, _, _) in shapes_pw:
            P = h * w
            x = rng.integers(0, 256, (P, cin)).astype(np.uint8)
            wt = rng.integers(-127, 128, (cout, cin)).astype(np.int8)
            b, M = np.zeros(cout, np.int32), np.full(cout, 0.01, np.float32)
            o = np.empty((P, cout), np.uint8)
            if v == 2:
                total += _timed(fn, x, wt, b, M, 0, 0, 255, o)
            else:
                x4, packed = QG.as_words(x), QG.pack_weights(wt)
                bb, MM = (QG.pad_to_blocks(b), QG.pad_to_blocks(M)) if v == 4 else (b, M)
                total += _timed(fn, x4, packed, bb, MM, 0, 0, 255, o)
            macs += P * cin * cout
        out["gemm"][str(v)] = {"ms": total * 1e3, "gops": 2 * macs / total / 1e9}
    for v, fn in QD.DEPTHWISE.items():
        total, macs = 0.0, 0
        for (c, h, w), (_, ho, wo), s in shapes_dw:
            x = rng.integers(0, 256, (1, h, w, c)).astype(np.uint8)
            wt = rng.integers(-127, 128, (3, 3, c)).astype(np.int16)
            b, M = np.zeros(c, np.int32), np.full(c, 0.01, np.float32)
            o = np.empty((1, ho, wo, c), np.uint8)
            if v == 2 and s == 1:
                t = QD.tiles(wt, b, M, wo)
                total += _timed(fn, x, 3, *t, 0, 0, 255, 1, o)
            elif v == 3:
                total += _timed(fn[3], x, 3, wt, b, M, 0, 0, 255, s, 1, o)
            elif v == 4:
                wpk, bf = QD.pack_taps(wt), QD.fold_taps(wt, b, 3)
                total += _timed(fn, x, 3, wt, b, wpk, bf, M, 0, 0, 255, s, 1, o)
            else:  # version 1, and version 2's stride-2 layers (it has none of its own)
                total += _timed(QD.depthwise_v1, x, 3, wt, b, M, 0, 0, 255, s, 1, o)
            macs += ho * wo * c * 9
        out["depthwise"][str(v)] = {"ms": total * 1e3, "gops": 2 * macs / total / 1e9}
    out["depthwise_bytes"] = sum(h * w * c + ho * wo * c for (c, h, w), (_, ho, wo), _ in shapes_dw)
    return out


def roofline() -> dict:
    """What bounds the kernels here: a parallel copy's bandwidth (Numba, 2 threads, 256 MB) and
    the int8 GEMM (version 4) on a large square-ish product, in GOP/s."""
    numba.set_num_threads(2)

    @numba.njit(parallel=True, cache=False)
    def copy(a, b):
        for i in numba.prange(a.shape[0]):
            b[i] = a[i]

    a = np.ones(1 << 25, np.float64)
    b = np.empty_like(a)
    t = _timed(copy, a, b, reps=10)
    P, K, N = 3136, 512, 512
    rng = np.random.default_rng(0)
    x = QG.as_words(rng.integers(0, 256, (P, K)).astype(np.uint8))
    w = QG.pack_weights(rng.integers(-127, 128, (N, K)).astype(np.int8))
    bias, M = QG.pad_to_blocks(np.zeros(N, np.int32)), QG.pad_to_blocks(np.full(N, 1e-4, np.float32))
    o = np.empty((P, N), np.uint8)
    tg = _timed(QG.gemm_v4, x, w, bias, M, 0, 0, 255, o, reps=20)
    return {
        "copy_GBps": 2 * a.nbytes / t / 1e9,
        "gemm_gops": 2 * P * K * N / tg / 1e9,
        "gemm_shape": [P, K, N],
    }


def profile() -> dict:
    """MobileNetV2-1.0/224 batch 1 in one Numba process: the integer model's time per kind of
    layer (its convolutions' calls timed one by one) and its whole forward, and the float
    model's whole forward (whose fused blocks do not split by kind)."""
    numba.set_num_threads(2)
    case = Case()
    m = numpy_impl.mobilenet("v2").reestimate_batch_norm([calibration_images(case)]).eval()
    q = quantize(m, [calibration_images(case)], backend="numba")
    x = inputs(case)[0]
    per = collections.defaultdict(float)
    for _, layer in q.named_layers():
        if isinstance(layer, QBlock):
            layer.fused = None  # the layers one by one, each call timed
        if isinstance(layer, QConv):
            conv = layer.conv

            def timed(xx, conv=conv):
                t0 = time.perf_counter()
                y = conv(xx)
                per[conv.kind] += time.perf_counter() - t0
                return y

            layer.conv = timed
    reps = 40
    q.forward(x)
    per.clear()
    t0 = time.perf_counter()
    for _ in range(reps):
        q.forward(x)
    int8_total = (time.perf_counter() - t0) / reps
    mf = numpy_impl.mobilenet("v2", backend="numba")
    mf.load_state_dict(m.state_dict())
    mf.eval()
    mf.forward(x)
    t0 = time.perf_counter()
    for _ in range(reps):
        mf.forward(x)
    float_total = (time.perf_counter() - t0) / reps
    return {
        "int8": {k: v / reps * 1e3 for k, v in per.items()},
        "int8_total": int8_total * 1e3,
        "float_total": float_total * 1e3,
    }


def repeats() -> list:
    """MobileNetV2-1.0/224 measured again with more rounds (every round's median is kept, the
    sides alternating within each round, so that round r of two sides can be compared as a
    pair): batch 1 on our float and the three int8 sides, 10 rounds; batch 8 on the int8 ones."""
    b1 = ["numba", "numba-int8", "torch-int8", "onnxruntime-int8"]
    return [
        B.bench([Case()], b1, rounds=10, threads=2, min_time=0.5),
        B.bench([Case(batch=8)], [s for s in SIDES if s.endswith("int8")], rounds=3, threads=2, min_time=1.0),
    ]


def fusion() -> dict:
    """MobileNetV2-1.0/224's integer forward (ms, median of 30) in one Numba process, its
    inverted residuals run three ways, alternating: layer by layer ("layers"), each block in one
    call of the layers' parallel kernels ("call"), and tiled (each thread a band of rows start to
    end, the expanded rows in a buffer of its own: "tiled", where a block has enough rows)."""
    numba.set_num_threads(2)
    out = {}
    for batch in (1, 8):
        case = Case(batch=batch)
        m = numpy_impl.mobilenet("v2").reestimate_batch_norm([calibration_images(case)]).eval()
        q = quantize(m, [calibration_images(case)], backend="numba")
        x = inputs(case)[0]
        blocks = [b for _, b in q.named_layers() if isinstance(b, QBlock)]
        fused = [b.fused for b in blocks]

        def mode(name, blocks=blocks, fused=fused):
            QO.TILED = name == "tiled"
            for b, f in zip(blocks, fused):
                b.fused = None if name == "layers" else f
                if f is not None:
                    f._tiles.clear()

        times = {k: [] for k in ("layers", "call", "tiled")}
        try:
            for _ in range(30):
                for k in times:
                    mode(k)
                    q.forward(x)
                    t0 = time.perf_counter()
                    q.forward(x)
                    times[k].append(time.perf_counter() - t0)
        finally:
            mode("tiled")
            q.forward(x)  # (the tiles planned again, to count them)
        out[str(batch)] = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
        out[str(batch)]["tiled_blocks"] = sum(
            any(t is not None for t in f._tiles.values()) for f in fused if f is not None
        )
    return out


PARTS = {
    "models": None,
    "kernels": kernels,
    "roofline": roofline,
    "profile": profile,
    "fusion": fusion,
    "repeats": repeats,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--only", nargs="*", choices=tuple(PARTS), default=None, help="rerun these parts, keep the rest"
    )
    a = p.parse_args(argv)
    path = RESULTS / "int8.json"
    res = json.loads(path.read_text()) if a.only and path.is_file() else {}
    for part in a.only or PARTS:
        res[part] = models(a.quick, a.rounds) if part == "models" else PARTS[part]()
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(res, indent=1))
    if "models" in res:
        print(B.format_table(res["models"]))
    print(json.dumps({k: v for k, v in res.items() if k != "models"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
