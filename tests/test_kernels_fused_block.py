"""The fused inverted-residual block against the composition of reference ops."""

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from kernels import fused_block as FB
from numpy_impl import functional as F

from .helpers import (
    DTYPES,
    EPSILONS,
    MEMORY,
    MOMENTA,
    U32,
    U64,
    batch_norm_bounds,
    bound_tolerance,
    in_memory,
    running_stat_bounds,
    strided,
)


def make_block(rng, cin, t, cout):
    """Float64 weights and BN tuples of a block, rounded to float32 values (so the float32 and
    float64 references see the same numbers). BN weights of |1.5-4.5| push values past 6."""
    hid = cin * t
    ws = [
        None if t == 1 else rng.standard_normal((hid, cin, 1, 1)) * 0.4,
        rng.standard_normal((hid, 1, 3, 3)) * 0.4,
        rng.standard_normal((cout, hid, 1, 1)) * 0.4,
    ]

    def bn(c):
        return [
            rng.choice([-1, 1], c) * (1.5 + 3 * rng.random(c)),
            rng.standard_normal(c),
            rng.standard_normal(c) * 0.2,
            rng.random(c) + 0.5,
        ]

    bns = [None if t == 1 else bn(hid), bn(hid), bn(cout)]
    return [f32(w) for w in ws], [None if b is None else [f32(a) for a in b] for b in bns]


def f32(a):
    """``a``'s values rounded to float32, kept in float64."""
    return None if a is None else a.astype(np.float32).astype(np.float64)


def cast(ws, bns, dtype):
    ws = [None if w is None else w.astype(dtype) for w in ws]
    return ws, [None if b is None else [a.astype(dtype) for a in b] for b in bns]


def reference(x, ws, bns, stride, residual, training, momentum, eps):
    """The unfused block with the reference ops in x's dtype; returns y, the pre-activations
    of the two ReLU6s, the inputs of the three batch norms and a backward closure."""
    steps, pres, ins, h = [], [], [None], x
    if ws[0] is not None:
        a = F.pointwise_conv2d(h, ws[0])
        ins[0] = a
        b, c0 = F.batch_norm(a, *bns[0], training, momentum, eps)
        steps.append(("pw", h, ws[0], c0, b))
        pres.append(b)
        h = F.relu6(b)
    a = F.depthwise_conv2d(h, ws[1], stride, 1)
    ins.append(a)
    b, c1 = F.batch_norm(a, *bns[1], training, momentum, eps)
    steps.append(("dw", h, ws[1], c1, b))
    pres.append(b)
    h2 = F.relu6(b)
    a = F.pointwise_conv2d(h2, ws[2])
    ins.append(a)
    y, c2 = F.batch_norm(a, *bns[2], training, momentum, eps)

    def backward(dy):
        """Gradients (dx, dws, dbns), and the same structure of (terms, k): the magnitudes of
        the terms of the last reduction each gradient comes from and its length."""
        bn_terms = []  # (terms of dweight, terms of dbias, k) of each BN, in backward order
        conv_terms = {}

        def bn_backward(g, cache, a, params):
            axes = (0, 2, 3)
            m = a.size // a.shape[1]
            mean, var = (a.mean(axes), a.var(axes)) if training else (params[2], params[3])
            bnd = batch_norm_bounds(a, params[0], params[1], g, mean, var, eps, training)
            bn_terms.append(((bnd["dweight"], m + 6), (bnd["dbias"], m + 6)))
            return F.batch_norm_backward(g, cache)

        def conv_backward(kind, g, inp, w, idx):
            if kind == "dw":
                out = F.depthwise_conv2d_backward(g, inp, w, stride, 1)
                t = F.depthwise_conv2d_backward(np.abs(g), np.abs(inp), np.abs(w), stride, 1)
                conv_terms[idx] = ((t[0], 9), (t[1], g.size // g.shape[1]))
            else:
                out = F.pointwise_conv2d_backward(g, inp, w)
                t = F.pointwise_conv2d_backward(np.abs(g), np.abs(inp), np.abs(w))
                conv_terms[idx] = ((t[0], w.shape[0]), (t[1], g.size // g.shape[1]))
            return out

        g, dbn2w, dbn2b = bn_backward(dy, c2, ins[2], bns[2])
        g, dpw = conv_backward("pw", g, h2, ws[2], 2)
        dws, dbns = [None, None, dpw], [None, None, (dbn2w, dbn2b)]
        for i, (kind, inp, w, cache, pre) in reversed(list(enumerate(steps))):
            k = i if ws[0] is not None else i + 1
            g = F.relu6_backward(g, pre)
            g, dbw, dbb = bn_backward(g, cache, ins[k], bns[k])
            g, dws[k] = conv_backward(kind, g, inp, w, k)
            dbns[k] = (dbw, dbb)
        tx, kx = conv_terms[min(conv_terms)][0]  # dx comes from the first conv's backward
        t_dx = (tx + np.abs(dy) if residual else tx, kx + 1)
        t_dws = [conv_terms[i][1] if i in conv_terms else None for i in range(3)]
        t_dbns = [bn_terms[2 - i] if dbns[i] is not None else None for i in range(3)]  # appended BN2 first
        return ((g + dy if residual else g), dws, dbns), (t_dx, t_dws, t_dbns)

    return (y + x if residual else y), pres, ins, backward


def flat(grads):
    """(dx, dws, dbns) -> a list of arrays (None dropped) in a fixed order."""
    dx, dws, dbns = grads
    return [dx, *(w for w in dws if w is not None), *(a for b in dbns if b is not None for a in b)]


class Tolerance:
    """How far the kernel may be from the float64 reference, norm-wise per array.

    The estimate of rounding at this block's scale is the error of the reference ops themselves
    run in float32, scaled by u(dtype)/u(float32) for float64 (rounding errors are linear in the
    unit roundoff to first order); 8 roundings of the largest value are added where the float32
    run happened to be exact. The kernel rounds differently (float32 accumulation in its
    depthwise loops where the reference accumulates in float64, a one-pass variance in float64):
    over 400 examples of the thorough profile its error reached 14x the estimate, hence 32x.
    """

    def __init__(self, dtype):
        self.scale = 1.0 if dtype == np.float32 else U64 / U32
        self.u = U32 if dtype == np.float32 else U64

    def __call__(self, got32, exact):
        err32 = np.abs(np.asarray(got32, np.float64) - exact).max(initial=0.0)
        return 32 * err32 * self.scale + 8 * self.u * np.abs(exact).max(initial=0.0)

    def check(self, got, got32, exact, what, floor=0.0):
        """``floor``: a bound of the last op's own rounding where float32 cannot show it (its
        reductions run in float64 in either dtype)."""
        got = np.asarray(got, np.float64)
        assert got.shape == exact.shape, f"{what}: shape {got.shape} != {exact.shape}"
        err, tol = np.abs(got - exact).max(initial=0.0), self(got32, exact) + floor
        assert err <= tol, f"{what}: error {err:.3e} > tolerance {tol:.3e}"


cases = st.tuples(
    st.integers(1, 3),
    st.integers(1, 12),
    st.integers(1, 9),
    st.integers(1, 9),
    st.sampled_from([1, 6]),
    st.integers(0, 12),
    st.sampled_from([1, 2]),
)


# Always covered, whatever the draws: training with the residual (t = 6 and t = 1), and stride 2.
@example(
    case=(2, 4, 5, 6, 6, 4, 1),
    dtype=np.float64,
    training=True,
    tile=1,
    memory="channels_last",
    w_strided=False,
    momentum=0.37,
    eps=1e-3,
    seed=1,
    pool=True,
)
@example(
    case=(2, 3, 4, 5, 1, 3, 1),
    dtype=np.float32,
    training=True,
    tile=1 << 20,
    memory="nchw",
    w_strided=True,
    momentum=0.1,
    eps=1e-5,
    seed=2,
    pool=True,
)
@example(
    case=(2, 4, 7, 6, 6, 5, 2),
    dtype=np.float64,
    training=True,
    tile=1,
    memory="strided",
    w_strided=False,
    momentum=1.0,
    eps=0.25,
    seed=3,
    pool=True,
)
# Inference with the tiles run from Python (the older path), one row per band, stride 2.
@example(
    case=(1, 3, 7, 5, 6, 4, 2),
    dtype=np.float64,
    training=False,
    tile=1,
    memory="channels_last",
    w_strided=False,
    momentum=0.1,
    eps=1e-5,
    seed=7,
    pool=False,
)
# Inference in one parallel region, with the residual: row tiles, and hidden-channel chunks (few rows).
@example(
    case=(2, 4, 6, 5, 6, 0, 1),
    dtype=np.float64,
    training=False,
    tile=1,
    memory="channels_last",
    w_strided=False,
    momentum=0.1,
    eps=1e-5,
    seed=6,
    pool=True,
)
@example(
    case=(1, 4, 3, 5, 6, 0, 1),
    dtype=np.float64,
    training=False,
    tile=1 << 20,
    memory="channels_last",
    w_strided=False,
    momentum=0.1,
    eps=1e-5,
    seed=4,
    pool=True,
)
@given(
    case=cases,
    dtype=DTYPES,
    training=st.booleans(),
    tile=st.sampled_from([1, 4096, 1 << 20]),
    memory=MEMORY,
    w_strided=st.booleans(),
    momentum=MOMENTA,
    eps=EPSILONS,
    seed=st.integers(0, 2**16),
    pool=st.booleans(),
)
def test_fused_block_matches_composition(
    case, dtype, training, tile, memory, w_strided, momentum, eps, seed, pool
):
    """``pool``: inference tiles in one Numba parallel region (row bands, or row bands x hidden-channel
    chunks when a layer has too few rows for the threads), or the tiles run from Python."""
    n, cin, h, w, t, cout, stride = case
    cout = cout or cin  # 0 draws C_out == C_in: the residual, at stride 1
    assume(not training or n * ((h - 1) // stride + 1) * ((w - 1) // stride + 1) > 1)  # BN needs 2 values
    rng = np.random.default_rng(seed)
    ws, bns = make_block(rng, cin, t, cout)
    x = f32(rng.standard_normal((n, cin, h, w)))
    dy = f32(rng.standard_normal((n, cout, (h - 1) // stride + 1, (w - 1) // stride + 1)))
    residual = stride == 1 and cin == cout
    refs = {}  # the reference in float64 (the exact answer) and in float32 (its own rounding)
    for dt in (np.float64, np.float32):
        ws_r, bns_r = cast(ws, bns, dt)
        bns_0 = [None if b is None else [a.copy() for a in b] for b in bns_r]
        y_r, pres, ins, backward = reference(
            x.astype(dt), ws_r, bns_r, stride, residual, training, momentum, eps
        )
        grads, terms = backward(dy.astype(dt)) if training else (None, None)
        refs[dt] = (y_r, pres, bns_r, grads and flat(grads), ins, bns_0, terms and flat(terms))
    (y64, pres64, bns64, g64, ins64, bns0, terms), (y32, pres32, bns32, g32, *_) = (
        refs[np.float64],
        refs[np.float32],
    )

    tol = Tolerance(dtype)
    if training:
        # Backward: a pre-activation within rounding (the tolerance) of a ReLU6 kink may pass the
        # gradient or not, and either is right: such draws are left out.
        for p64, p32 in zip(pres64, pres32):
            near = tol(p32, p64)
            assume(not np.any((np.abs(p64) <= near) | (np.abs(p64 - 6) <= near)))
    for keep in ("store", "recompute") if training else ("store",):  # both training-memory variants
        ws_k, bns_k = cast(ws, bns, dtype)
        ws_k = [None if a is None else strided(a, w_strided) for a in ws_k]  # views that are not contiguous
        saved = FB.TILE_BYTES, FB.EVAL_POOL
        FB.TILE_BYTES, FB.EVAL_POOL = tile, pool  # from one row per tile to whole batches
        try:
            y, cache = FB.inverted_residual(
                in_memory(x.astype(dtype), memory),
                ws_k,
                bns_k,
                stride,
                None,
                training,
                momentum,
                eps,
                memory=keep,
            )
        finally:
            FB.TILE_BYTES, FB.EVAL_POOL = saved
        assert y.dtype == dtype
        tol.check(y, y32, y64, f"y ({keep})")
        for i, (b, b64, b32) in enumerate(zip(bns_k, bns64, bns32)):  # running statistics: training only
            if b is None:
                continue
            bounds = running_stat_bounds(ins64[i], bns0[i][2], bns0[i][3]) if training else (0, 0, 0)
            for j in (2, 3):
                floor = bound_tolerance(bounds[j - 2], bounds[2], dtype).max() if training else 0.0
                tol.check(b[j], b32[j], b64[j], f"bns[{i}][{j}]", floor)
        if not training:
            assert cache is None
            return
        grads = flat(FB.inverted_residual_backward(in_memory(dy.astype(dtype), memory), cache))
        assert len(grads) == len(g64)
        for i, (got, e64, e32, (t, k)) in enumerate(zip(grads, g64, g32, terms)):
            floor = bound_tolerance(t, k, dtype).max()
            tol.check(got, e32, e64, f"gradient {i} (dx, weights, BN pairs; {keep})", floor)


def test_fused_block_bad_input():
    rng = np.random.default_rng(0)
    ws, bns = cast(*make_block(rng, 4, 6, 4), np.float32)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    with pytest.raises(
        ValueError, match=r"expand weight must have shape \(24, 3, 1, 1\), got \(24, 4, 1, 1\)"
    ):
        FB.inverted_residual(x[:, :3], ws, bns)
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        FB.inverted_residual(x, ws, bns, stride=3)
    with pytest.raises(TypeError, match="must have the same dtype as x"):
        FB.inverted_residual(x.astype(np.float64), ws, bns)
    with pytest.raises(ValueError, match="residual needs stride 1"):
        FB.inverted_residual(x, ws, bns, stride=2, residual=True)
    with pytest.raises(ValueError, match="memory must be 'store' or 'recompute', got 'disk'"):
        FB.inverted_residual(x, ws, bns, memory="disk")
    with pytest.raises(TypeError, match="cache must come from a training-mode inverted_residual"):
        FB.inverted_residual_backward(x, None)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"momentum": 1.5}, "momentum must be"),
        ({"eps": 0.0}, "eps must be > 0"),
        ({"x": (1, 4, 1, 1)}, "more than 1 value per channel"),
        ({"stride": 2, "x": (1, 4, 2, 1)}, "more than 1 value per channel"),  # 2 pixels in, 1 out
        ({"bn_dtype": np.int64}, "bns\\[1\\] weight must"),
    ],
)
def test_fused_block_training_entry_checks_what_its_sub_ops_no_longer_do(change, match):
    """The training path calls the sub-ops' unchecked bodies: the entry refuses what their public
    wrappers (and the reference composite) refuse, before any of them runs."""
    rng = np.random.default_rng(0)
    ws, bns = cast(*make_block(rng, 4, 6, 4), np.float32)
    x = rng.standard_normal(change.get("x", (2, 4, 5, 5))).astype(np.float32)
    if "bn_dtype" in change:
        bns = (bns[0], (bns[1][0].astype(change["bn_dtype"]), *bns[1][1:]), bns[2])
    kw = {k: change.get(k, d) for k, d in (("momentum", 0.1), ("eps", 1e-5), ("stride", 1))}
    with pytest.raises((ValueError, TypeError), match=match):
        FB.inverted_residual(x, ws, bns, kw["stride"], None, True, kw["momentum"], kw["eps"])
    with pytest.raises((ValueError, TypeError)):  # the reference refuses it as well
        F.inverted_residual(x, ws, bns, kw["stride"], None, True, kw["momentum"], kw["eps"])


def test_fused_block_backward_checks_dout():
    rng = np.random.default_rng(0)
    ws, bns = cast(*make_block(rng, 4, 6, 4), np.float32)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    y, cache = FB.inverted_residual(x, ws, bns, 1, None, True)
    with pytest.raises(ValueError, match="dout must have shape"):
        FB.inverted_residual_backward(y[:, :, :4], cache)
    with pytest.raises(TypeError, match="same dtype"):
        FB.inverted_residual_backward(y.astype(np.float64), cache)


@given(
    seed=st.integers(0, 2**16),
    t=st.sampled_from([1, 6]),
    cin=st.integers(1, 6),
    stride=st.sampled_from([1, 2]),
    training=st.booleans(),
    hw=st.integers(2, 9),
)
def test_fused_block_matches_the_functional_reference(seed, t, cin, stride, training, hw):
    """float64: the kernel and ``numpy_impl.functional.inverted_residual`` differ only in the
    order of their sums (and the kernel's folded BN in eval), so to ~1e-9 relative."""
    rng = np.random.default_rng(seed)
    ws, bns = make_block(rng, cin, t, cin)
    bns_k = [None if b is None else [a.copy() for a in b] for b in bns]
    x = rng.standard_normal((2, cin, hw, hw))
    y, cache = F.inverted_residual(x, ws, bns, stride, None, training, 0.1, 1e-5)
    yk, cache_k = FB.inverted_residual(x, ws, bns_k, stride, None, training, 0.1, 1e-5)
    scale = np.abs(y).max() + 1
    np.testing.assert_allclose(yk, y, rtol=1e-9, atol=1e-9 * scale)
    if not training:
        return
    dout = rng.standard_normal(y.shape)
    for got, want in zip(
        flat(FB.inverted_residual_backward(dout, cache_k)), flat(F.inverted_residual_backward(dout, cache))
    ):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8 * (np.abs(want).max() + 1))
    for b, bk in zip(bns, bns_k):
        if b is not None:
            np.testing.assert_allclose(bk[2:], b[2:], rtol=1e-10, atol=1e-12)


def make_v3_block(rng, cin, t, cout, k, se):
    """A MobileNetV3 block's arrays (float32 values in float64): k x k depthwise, and the
    squeeze-and-excite's (w1, b1, w2, b2) or None."""
    ws, bns = make_block(rng, cin, t, cout)
    ws[1] = f32(rng.standard_normal((cin * t, 1, k, k)) * 0.3)
    if not se:
        return ws, bns, None
    hid, cr = cin * t, max(1, cin * t // 4)
    shapes = ((cr, hid, 1, 1), (cr,), (hid, cr, 1, 1), (hid,))
    return ws, bns, tuple(f32(rng.standard_normal(s) * 0.5) for s in shapes)


v3_cases = st.tuples(
    st.integers(1, 3),  # n
    st.integers(1, 6),  # C_in
    st.integers(1, 9),  # H
    st.integers(1, 9),  # W
    st.sampled_from([1, 4]),  # t
    st.integers(0, 7),  # C_out (0: C_in)
    st.sampled_from([1, 2]),  # stride
    st.sampled_from([3, 5]),  # depthwise kernel
)


# Always covered: squeeze-and-excite with 5x5 in one tile per image, in hidden-channel chunks
# (few rows), in row bands of one row, and without expansion; training with replay.
@example(case=(1, 4, 7, 7, 4, 0, 1, 5), act="hardswish", se=True, training=False, tile=1 << 20, memory="channels_last", keep="store", seed=1)  # fmt: skip
@example(case=(2, 3, 8, 6, 4, 5, 2, 5), act="relu", se=True, training=False, tile=1, memory="nchw", keep="store", seed=2)  # fmt: skip
@example(case=(1, 4, 9, 9, 4, 0, 1, 3), act="hardswish", se=True, training=False, tile=4096, memory="channels_last", keep="store", seed=3)  # fmt: skip
@example(case=(2, 4, 6, 6, 1, 0, 2, 3), act="relu", se=True, training=False, tile=1 << 20, memory="channels_last", keep="store", seed=4)  # fmt: skip
@example(case=(2, 4, 6, 6, 4, 0, 1, 5), act="hardswish", se=True, training=True, tile=1, memory="channels_last", keep="recompute", seed=5)  # fmt: skip
@given(
    case=v3_cases,
    act=st.sampled_from(["relu", "hardswish", "relu6"]),
    se=st.booleans(),
    training=st.booleans(),
    tile=st.sampled_from([1, 4096, 1 << 20]),
    memory=MEMORY,
    keep=st.sampled_from(["store", "recompute"]),
    seed=st.integers(0, 2**16),
)
def test_fused_v3_block_matches_the_functional_reference(case, act, se, training, tile, memory, keep, seed):
    """MobileNetV3's blocks (kxk depthwise, ReLU or hard-swish, squeeze-and-excite) through the
    fused kernel and ``numpy_impl.functional.inverted_residual``, float64: they differ in the
    order of their sums, the kernel's folded eval BN and its float64 mean in the squeeze, so
    to ~1e-12 relative (1e-9 allowed). Then float32's output against float64's, within the
    rounding of the reference run in float32 (``Tolerance``)."""
    n, cin, h, w, t, cout, stride, k = case
    cout = cout or cin
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    assume(not training or n * ho * wo > 1)  # batch statistics need two values per channel
    rng = np.random.default_rng(seed)
    ws, bns, sew = make_v3_block(rng, cin, t, cout, k, se)
    x = f32(rng.standard_normal((n, cin, h, w)))
    kw = {"activation": act, "se": sew}
    bns_r = [None if b is None else [a.copy() for a in b] for b in bns]
    y, cache = F.inverted_residual(x, ws, bns_r, stride, None, training, 0.1, 1e-3, **kw)
    saved = FB.TILE_BYTES
    FB.TILE_BYTES = tile
    try:
        bns_k = [None if b is None else [a.copy() for a in b] for b in bns]
        yk, cache_k = FB.inverted_residual(
            in_memory(x, memory), ws, bns_k, stride, None, training, 0.1, 1e-3, memory=keep, **kw
        )
        ws32, bns32 = cast(ws, bns, np.float32)
        se32 = None if sew is None else tuple(a.astype(np.float32) for a in sew)
        y32k, _ = FB.inverted_residual(
            in_memory(x.astype(np.float32), memory), ws32, bns32, stride, None, training, 0.1, 1e-3,
            activation=act, se=se32,
        )  # fmt: skip
    finally:
        FB.TILE_BYTES = saved
    np.testing.assert_allclose(yk, y, rtol=1e-9, atol=1e-9 * (np.abs(y).max() + 1))
    ws32r, bns32r = cast(ws, bns, np.float32)
    y32r, _ = F.inverted_residual(x.astype(np.float32), ws32r, bns32r, stride, None, training, 0.1, 1e-3, activation=act, se=se32)  # fmt: skip
    Tolerance(np.float32).check(y32k, y32r, y, "float32 y")
    if not training:
        assert cache_k is None
        return
    for b, bk in zip(bns_r, bns_k):
        if b is not None:
            np.testing.assert_allclose(bk[2:], b[2:], rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(y.shape)
    got, want = (
        FB.inverted_residual_backward(in_memory(dout, memory), cache_k),
        F.inverted_residual_backward(dout, cache),
    )
    assert len(got) == len(want) == (4 if se else 3)
    for i, (a, b) in enumerate(
        zip(flat(got[:3]) + list(got[3:] and got[3]), flat(want[:3]) + list(want[3:] and want[3]))
    ):
        np.testing.assert_allclose(
            a, b, rtol=1e-8, atol=1e-8 * (np.abs(b).max() + 1), err_msg=f"gradient {i}"
        )


def test_fused_v3_block_bad_input():
    rng = np.random.default_rng(0)
    ws, bns, sew = make_v3_block(rng, 4, 4, 4, 5, True)
    x = rng.standard_normal((1, 4, 5, 5))
    with pytest.raises(ValueError, match="activation must be one of"):
        FB.inverted_residual(x, ws, bns, activation="swish")
    with pytest.raises(ValueError, match=r"se w1 must have shape \(4, 16, 1, 1\), got \(4, 8, 1, 1\)"):
        FB.inverted_residual(x, ws, bns, se=(np.zeros((4, 8, 1, 1)), *sew[1:]))
    with pytest.raises(
        ValueError, match=r"depthwise weight must have shape \(16, 1, 3, 3\), got \(16, 1, 7, 7\)"
    ):
        FB.inverted_residual(x, [ws[0], np.zeros((16, 1, 7, 7)), ws[2]], bns)
