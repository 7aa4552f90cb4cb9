"""Pointwise, batch norm and stem-conv kernels against the NumPy reference; fuzzing of every public kernel."""

import numpy as np
import pytest
from hypothesis import assume, event, example, given
from hypothesis import strategies as st

import kernels as K
from kernels import _gemm as KG
from kernels import batchnorm as KB
from kernels import pointwise as KP
from kernels._prep import is_channels_last
from numpy_impl import functional as F

from .helpers import (
    DTYPES,
    EPSILONS,
    MEMORY,
    MOMENTA,
    assert_within_bound,
    batch_norm_bounds,
    bound_tolerance,
    conv_cases,
    in_memory,
    rng_arrays,
    running_stat_bounds,
    strided,
)


# The one-pass backward with several blocks per thread (98 rows in blocks of 16), always.
@example(n=2, cin=5, cout=6, h=7, w=7, dtype=np.float64, memory="channels_last", dout_memory="channels_last",
         w_strided=False, seed=3, pair=64)  # fmt: skip
@given(n=st.integers(1, 4), cin=st.integers(1, 40), cout=st.integers(1, 40), h=st.integers(1, 9),
       w=st.integers(1, 9), dtype=DTYPES, memory=MEMORY, dout_memory=MEMORY, w_strided=st.booleans(),
       seed=st.integers(0, 2**16), pair=st.sampled_from([None, 64, 1 << 18]))  # fmt: skip
def test_pointwise_matches_reference(n, cin, cout, h, w, dtype, memory, dout_memory, w_strided, seed, pair):
    """``pair``: the backward's two GEMMs in one pass over dout (``_gemm.backward_pair``), with blocks of
    that many bytes (64: many blocks of 16 rows), or (None) as two calls."""
    x, wt = rng_arrays(seed, dtype, (n, cin, h, w), (cout, cin, 1, 1))
    out = K.pointwise_conv2d(in_memory(x, memory), strided(wt, w_strided))
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    saved = KP.PAIR_BYTES, KG.backward_pair.__defaults__
    KP.PAIR_BYTES = 1 << 60 if pair is None else 0
    KG.backward_pair.__defaults__ = (pair or 1 << 18,)
    try:
        dx, dw = K.pointwise_conv2d_backward(
            in_memory(dout, dout_memory), in_memory(x, memory), strided(wt, w_strided)
        )
    finally:
        KP.PAIR_BYTES, KG.backward_pair.__defaults__ = saved
    x64, w64, d64 = x.astype(np.float64), wt.astype(np.float64), dout.astype(np.float64)
    assert_within_bound(
        out, F.pointwise_conv2d(x64, w64), F.pointwise_conv2d(np.abs(x64), np.abs(w64)), cin, dtype
    )
    e_dx, e_dw = F.pointwise_conv2d_backward(d64, x64, w64)
    b_dx, b_dw = F.pointwise_conv2d_backward(np.abs(d64), np.abs(x64), np.abs(w64))
    assert_within_bound(dx, e_dx, b_dx, cout, dtype, "dx")
    assert_within_bound(dw, e_dw, b_dw, n * h * w, dtype, "dw")
    if memory == "channels_last" and is_channels_last(in_memory(x, memory)):
        assert is_channels_last(out) or cout == 1


ACTIVATION = {None: (lambda v: v, lambda y: np.ones(y.shape, bool)),  # forward, torch's "passes the gradient"
              "relu": (F.relu, lambda y: y > 0),  # threshold_backward: zero at 0
              "relu6": (F.relu6, lambda y: (y > 0) & (y < 6))}  # hardtanh_backward: zero at 0 and 6  # fmt: skip


def bn_inputs(seed, dtype, shape, affine, kinks):
    """x, weight, bias, running mean and var, dy. Weights of |2-6| and biases of +-2 push a good share
    of the normalised values past 0 and 6. ``kinks``: small integers and var + eps == 4, so that eval
    mode computes exactly and lands values exactly on 0 and 6 (eps must then be 0.25)."""
    c = shape[1]
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(shape)
    if kinks:
        x = rng.integers(-12, 13, shape).astype(float)
        w = rng.choice([-2.0, 2.0], c)  # scale = w / 2 = +-1
        b, rm = rng.integers(-3, 4, c).astype(float), rng.integers(-2, 3, c).astype(float)
        rv = np.full(c, 3.75)  # + eps 0.25 = 4: 1/sqrt is exact
        if not affine:
            w, b = np.ones(c), np.zeros(c)  # what the kernel uses for None
        scale, shift = w / 2, b - rm * w / 2
        x[0, :, 0, 0], x[-1, :, -1, -1] = -shift / scale, (6 - shift) / scale  # exactly onto 0 and 6
    else:
        x = rng.standard_normal(shape) * 3 + 1
        w = rng.choice([-1, 1], c) * (2 + 4 * rng.random(c))
        b, rm = rng.standard_normal(c) * 2, rng.standard_normal(c)
        rv = rng.random(c) + 0.5
    w, b = (w, b) if affine else (None, None)
    return [None if a is None else a.astype(dtype) for a in (x, w, b, rm, rv, dy)]


# Always covered, whatever the draws: training through ReLU6 with the parallel drivers and 3 chunks.
@example(shape=(2, 5, 4, 3), dtype=np.float32, training=True, act="relu6", dy_memory="nchw", affine=True,
         momentum=0.37, eps=1e-3, kinks=False, p_strided=True, seed=7, parallel=True, chunks=3)  # fmt: skip
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 24), st.integers(1, 6), st.integers(1, 6)),
       dtype=DTYPES, training=st.booleans(), act=st.sampled_from([None, "relu", "relu6"]), dy_memory=MEMORY,
       affine=st.booleans(), momentum=MOMENTA, eps=EPSILONS, kinks=st.booleans(), p_strided=st.booleans(),
       seed=st.integers(0, 2**16), parallel=st.booleans(), chunks=st.integers(1, 5))  # fmt: skip
def test_batch_norm_matches_reference(shape, dtype, training, act, dy_memory, affine, momentum, eps, kinks,
                                      p_strided, seed, parallel, chunks):  # fmt: skip
    if kinks:
        training, eps = False, 0.25
    assume(not training or shape[0] * shape[2] * shape[3] > 1)
    old = KB.SERIAL_BELOW, KB.ROW_CHUNKS
    # both drivers of the channels-last kernels, and any number of partial sums (not only one per thread)
    KB.SERIAL_BELOW, KB.ROW_CHUNKS = (0 if parallel else 1 << 62), chunks
    try:
        for memory in (
            "nchw",
            "channels_last",
            "strided",
        ):  # every layout (rows and planes kernels) each time
            _check_batch_norm(shape, dtype, training, act, memory, dy_memory, affine, momentum, eps, kinks,
                              p_strided, seed)  # fmt: skip
    finally:
        KB.SERIAL_BELOW, KB.ROW_CHUNKS = old


def _check_batch_norm(
    shape, dtype, training, act, memory, dy_memory, affine, momentum, eps, kinks, p_strided, seed
):
    x, w, b, rm, rv, dy = bn_inputs(seed, dtype, shape, affine, kinks)
    f64 = [None if a is None else a.astype(np.float64) for a in (x, w, b, rm, rv, dy)]
    # parameters and running statistics as views that are not contiguous (updated in place through the view)
    w, b, rm, rv = (None if a is None else strided(a, p_strided) for a in (w, b, rm, rv))
    rm_ref, rv_ref = f64[3].copy(), f64[4].copy()
    # the float64 reference on the same values is the "exact" answer
    pre, cache = F.batch_norm(f64[0], f64[1], f64[2], rm_ref, rv_ref, training, momentum, eps)
    forward, passes = ACTIVATION[act]

    y, kcache = K.batch_norm(in_memory(x, memory), w, b, rm, rv, training, momentum, eps, activation=act)
    dx, dw, db = K.batch_norm_backward(in_memory(dy, dy_memory), kcache)

    axes = (0, 2, 3)
    mean, var = (f64[0].mean(axes), f64[0].var(axes)) if training else (f64[3], f64[4])
    bnd = batch_norm_bounds(x, w, b, dy, mean, var, eps, training)
    k = bnd["k"]
    assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == shape
    # act is 1-Lipschitz: the bound of the normalised value holds after it
    assert_within_bound(y, forward(pre), bnd["y"], k, dtype, "y")
    if act is not None:  # clipped outputs are exact: a value clearly past a kink gives 0 or 6 itself
        tol = bound_tolerance(bnd["y"], k, dtype)
        assert np.all(y[pre < -tol] == 0), "values below 0 must give exactly 0"
        if act == "relu6":
            assert np.all(y[pre > 6 + tol] == 6), "values above 6 must give exactly 6"
    if kinks:
        np.testing.assert_array_equal(y, forward(pre))  # exact arithmetic: values exactly on 0 and 6
        assert (pre == 6).any() and ((pre == 0).any() or x.size == shape[1]), "the inputs miss the kinks"
    # Which elements pass the gradient is decided per element on the kernel's own output by torch's
    # rule: where a value lies within rounding of a kink either side is right, and the checks above
    # tie y to the reference everywhere else.
    g = np.where(passes(y.astype(np.float64)), f64[5], 0.0)
    dx_ref, dw_ref, db_ref = F.batch_norm_backward(g, cache)
    assert_within_bound(dx, dx_ref, bnd["dx"], k, dtype, "dx")
    assert (dw is None) == (db is None) == (not affine)
    if affine:
        assert_within_bound(dw, dw_ref, bnd["dweight"], k, dtype, "dweight")
        assert_within_bound(db, db_ref, bnd["dbias"], k, dtype, "dbias")
    mean_b, var_b, k_run = running_stat_bounds(x, f64[3], f64[4])
    assert_within_bound(rm, rm_ref, mean_b, k_run, dtype, "running_mean")
    assert_within_bound(rv, rv_ref, var_b, k_run, dtype, "running_var")


# The channels-last path (im2col) with both dilations and strides above 1, always.
@example(case={"x": (2, 3, 9, 8), "w": (4, 3, 3, 2), "stride": (2, 1), "padding": (1, 2), "dilation": (2, 3),
               "groups": 1}, dtype=np.float64, memory="channels_last", dout_memory="channels_last",
         w_strided=False, seed=5)  # fmt: skip
@given(case=conv_cases(), dtype=DTYPES, memory=MEMORY, dout_memory=MEMORY, w_strided=st.booleans(),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_conv2d_matches_reference(case, dtype, memory, dout_memory, w_strided, seed):
    x, w, b = rng_arrays(seed, dtype, case["x"], case["w"], (case["w"][0],))
    kw = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    out = K.conv2d(in_memory(x, memory), strided(w, w_strided), strided(b, w_strided), **kw)
    dout = rng_arrays(seed + 1, dtype, out.shape)[0]
    dx, dw, db = K.conv2d_backward(
        in_memory(dout, dout_memory), in_memory(x, memory), strided(w, w_strided), **kw
    )
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, dout))
    k = w.shape[1] * w.shape[2] * w.shape[3]
    assert_within_bound(out, F.conv2d(x64, w64, b64, **kw), F.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw),
                        k + 1, dtype, "out")  # fmt: skip
    e = F.conv2d_backward(d64, x64, w64, **kw)
    bnd = F.conv2d_backward(np.abs(d64), np.abs(x64), np.abs(w64), **kw)
    n_out = out.shape[0] * out.shape[2] * out.shape[3]
    for got, ex, bo, kk, name in zip((dx, dw, db), e, bnd, (w.shape[0] * w.shape[2] * w.shape[3], n_out, n_out),
                                     ("dx", "dw", "db")):  # fmt: skip
        assert_within_bound(got, ex, bo, kk, dtype, name)


# --- fuzzing: any input either raises ValueError/TypeError or gives the reference's answer ---

JUNK = st.sampled_from([None, 3, "x", [1.0, 2.0], np.float32(1.0)])
BAD_DTYPES = st.sampled_from([np.int32, np.float16, np.bool_, np.complex64])
ANY_SHAPE = st.lists(st.integers(0, 5), max_size=5).map(tuple)
BAD_PARAMS = st.one_of(st.integers(-2, 0), st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
                       st.sampled_from(["same", "valid", "full", 1.5, None, (1, 2, 3)]))  # fmt: skip


def values(shape, dtype, seed):
    """Normal values (scaled by 2, so that casts to int and bool are not all zero) of any dtype."""
    return (np.random.default_rng(seed).standard_normal(shape) * 2).astype(dtype)


def corrupt(draw, broken, name, good):
    """``good``, or when ``name`` is the broken one, something drawn to be wrong for it."""
    if broken != name:
        return good
    if isinstance(good, np.ndarray):
        bad = st.builds(values, ANY_SHAPE, DTYPES, st.integers(0, 99))
        return draw(st.one_of(JUNK, bad, st.just(good.astype(draw(BAD_DTYPES)))))
    return draw(BAD_PARAMS | JUNK)


@st.composite
def fuzz_convolution_case(draw):
    """Valid arguments for one of the convolutions, or the same with one of them broken (the
    valid case comes often enough for the answers to be compared: see the test's events)."""
    broken = draw(st.sampled_from([None, None, "x", "w", "dout", "stride", "padding", "dilation"]))
    kind = draw(st.sampled_from(["depthwise", "pointwise", "conv"]))
    dtype, seed = draw(DTYPES), draw(st.integers(0, 2**16))
    n, c, h, w_ = (draw(st.integers(1, 5)) for _ in range(4))
    k = draw(st.integers(1, 3))
    ws = {"depthwise": (c, 1, k, k), "pointwise": (k, c, 1, 1), "conv": (k + 1, c, k, k)}[kind]
    geo = [corrupt(draw, broken, name, draw(st.integers(lo, 2))) for name, lo in
           (("stride", 1), ("padding", 0), ("dilation", 1))]  # fmt: skip
    x = corrupt(draw, broken, "x", values((n, c, h, w_), dtype, seed))
    w = corrupt(draw, broken, "w", values(ws, dtype, seed + 1))
    return kind, x, w, geo, broken, seed


def agree(kernel, reference, args, what):
    """``kernel(*args)`` raises ValueError/TypeError, or gives the reference's answer within the
    error bound: the reference on the float64 values, the bound the reference on their absolute
    values, k the largest operand's size (no reduction is longer)."""
    try:
        got = kernel(*args)
    except (ValueError, TypeError):
        return None
    event(f"{what} ran")  # --hypothesis-show-statistics: how often the happy path is reached
    got = got if isinstance(got, tuple) else (got,)
    same = reference(*args)  # the reference accepts what the kernel accepts, in the same dtype
    same = same if isinstance(same, tuple) else (same,)
    f64 = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args]
    exact, bound = reference(*f64), reference(*[np.abs(a) if isinstance(a, np.ndarray) else a for a in f64])
    exact, bound = (exact, bound) if isinstance(exact, tuple) else ((exact,), (bound,))
    k = max(a.size for a in args if isinstance(a, np.ndarray))
    for g, s_, e, b in zip(got, same, exact, bound):
        assert g.dtype == s_.dtype and g.shape == s_.shape, (
            f"{what}: {g.dtype}{g.shape} vs {s_.dtype}{s_.shape}"
        )
        assert_within_bound(g, e, b, k, g.dtype, what)
    return got[0]


@given(case=fuzz_convolution_case(), data=st.data())
def test_fuzz_convolution_kernels(case, data):
    kind, x, w, geo, broken, seed = case
    calls = {  # kernel forward, kernel backward, reference forward, reference backward, geometry
        "depthwise": (K.depthwise_conv2d, K.depthwise_conv2d_backward, F.depthwise_conv2d,
                      F.depthwise_conv2d_backward, geo),
        "pointwise": (K.pointwise_conv2d, K.pointwise_conv2d_backward, F.pointwise_conv2d,
                      F.pointwise_conv2d_backward, []),
        "conv": (lambda x_, w_, *g: K.conv2d(x_, w_, None, *g), K.conv2d_backward,
                 lambda x_, w_, *g: F.conv2d(x_, w_, None, *g), F.conv2d_backward, geo),
    }  # fmt: skip
    kernel, kernel_bwd, ref, ref_bwd, g = calls[kind]
    out = agree(kernel, ref, (x, w, *g), f"{kind} forward")
    dtype = x.dtype if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) else np.float32
    dout = values(out.shape if out is not None else (1, 1, 1, 1), dtype, seed + 2)
    dout = corrupt(data.draw, broken, "dout", dout)
    agree(kernel_bwd, ref_bwd, (dout, x, w, *g), f"{kind} backward")


@st.composite
def fuzz_batch_norm_case(draw):
    broken = draw(st.sampled_from([None, None, "x", "p", "training", "act", "momentum", "eps"]))
    dtype, seed = draw(DTYPES), draw(st.integers(0, 2**16))
    shape = draw(st.tuples(*[st.integers(1, 4)] * 4) | st.tuples(st.integers(2, 6), st.integers(1, 5)))
    x = corrupt(draw, broken, "x", values(shape, dtype, seed))
    p = corrupt(draw, broken, "p", np.abs(values(shape[1], dtype, seed + 1)) + 0.5)  # running_var > 0
    training = corrupt(draw, broken, "training", draw(st.booleans()))
    act = (
        draw(st.sampled_from(["gelu", 3, "RELU"]))
        if broken == "act"
        else draw(st.sampled_from(list(ACTIVATION)))
    )
    momentum = (
        draw(st.sampled_from([-0.1, 1.5, float("nan"), "a"])) if broken == "momentum" else draw(MOMENTA)
    )
    eps = draw(st.sampled_from([0.0, -1e-5, float("nan"), "e"])) if broken == "eps" else draw(EPSILONS)
    return x, p, training, act, momentum, eps, seed


@given(case=fuzz_batch_norm_case())
def test_fuzz_batch_norm_kernel(case):
    x, p, training, act, momentum, eps, seed = case
    args = [x, *(p.copy() if isinstance(p, np.ndarray) else p for _ in range(4)), training, momentum, eps]
    ref_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]  # before the update
    try:
        y, cache = K.batch_norm(*args, activation=act)
    except (ValueError, TypeError):
        return
    event("batch norm ran")  # --hypothesis-show-statistics: how often the happy path is reached
    dtype = x.dtype
    ref_args = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in ref_args]
    pre, ref_cache = F.batch_norm(*ref_args)
    forward, passes = ACTIVATION[act]
    x64 = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = (x64.mean(axes), x64.var(axes)) if training else (ref_args[3], ref_args[4])
    dy = values(x.shape, dtype, seed + 2)
    bnd = batch_norm_bounds(x, p, p, dy, mean, var, eps, training)
    assert_within_bound(y, forward(pre), bnd["y"], bnd["k"], dtype, "y")
    dx, dw, db = K.batch_norm_backward(dy, cache)
    g = np.where(passes(y.astype(np.float64)), dy.astype(np.float64), 0.0)
    e_dx, e_dw, e_db = F.batch_norm_backward(g, ref_cache)
    assert_within_bound(dx, e_dx, bnd["dx"], bnd["k"], dtype, "dx")
    if p is None:  # no affine parameters and no running statistics (torch's training-only call)
        assert dw is None and db is None
        return
    assert_within_bound(dw, e_dw, bnd["dweight"], bnd["k"], dtype, "dweight")
    assert_within_bound(db, e_db, bnd["dbias"], bnd["k"], dtype, "dbias")
    mean_b, var_b, k_run = running_stat_bounds(x, p, p)
    for got, want, b, name in zip(args[3:5], ref_args[3:5], (mean_b, var_b), ("running_mean", "running_var")):
        assert_within_bound(got, want, b, k_run, dtype, name)


def test_valid_fuzz_shapes_really_run():
    # the fuzzers above mostly hit errors; the happy path of the same calls gives the reference's answer
    x, w = rng_arrays(0, np.float32, (1, 4, 3, 3), (4, 1, 3, 3))
    got, want = (
        K.depthwise_conv2d(x, w, 1, 1, 1),
        F.depthwise_conv2d(x.astype(np.float64), w.astype(np.float64), 1, 1),
    )
    bound = F.depthwise_conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), 1, 1)
    assert_within_bound(got, want, bound, 9, np.float32, "depthwise")
    with pytest.raises(ValueError, match="channel multiplier 1 only"):
        K.depthwise_conv2d(x, np.zeros((8, 1, 3, 3), np.float32))
