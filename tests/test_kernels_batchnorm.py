"""kernels.batchnorm (batch norm with its activation fused) against the NumPy reference; fuzzing
of the public batch-norm kernel."""

import numpy as np
from hypothesis import assume, event, example, given
from hypothesis import strategies as st

import kernels as K
from kernels import batchnorm as KB
from numpy_impl import functional as F

from . import fuzz
from .helpers import (
    DTYPES,
    EPSILONS,
    MEMORY,
    MOMENTA,
    assert_within_bound,
    batch_norm_bounds,
    bound_tolerance,
    in_memory,
    running_stat_bounds,
    strided,
)

ACTIVATION = {
    None: (lambda v: v, lambda y: np.ones(y.shape, bool)),  # forward, torch's "passes the gradient"
    "relu": (F.relu, lambda y: y > 0),  # threshold_backward: zero at 0
    "relu6": (F.relu6, lambda y: (y > 0) & (y < 6)),  # hardtanh_backward: zero at 0 and 6
    # hard-swish's slope depends on the pre-activation z, so its rule reads z (the kernel's own)
    "hardswish": (F.hardswish, lambda z: z > -3),
}
ZERO_BELOW = {"relu": 0.0, "relu6": 0.0, "hardswish": -3.0}  # exactly 0 below this pre-activation
SLOPE = {"hardswish": 1.5}  # the largest |act'|: errors of the normalised value grow by it at most


def kernel_gradient(act, y, kcache, dy):
    """The upstream gradient through the activation, decided per element on the kernel's own
    values (its output, or for hard-swish its recomputed pre-activation) by torch's rule."""
    if act != "hardswish":
        return np.where(ACTIVATION[act][1](y.astype(np.float64)), dy.astype(np.float64), 0.0)
    stats = {**{k: kcache[k] for k in KB.STATS_KEYS}, "act": 0}
    z = KB.batch_norm_replay(kcache["x"], stats)[0].astype(np.float64)
    return F.hardswish_backward(dy.astype(np.float64), z)


def scaled(bnd, act):
    """The bounds of ``helpers.batch_norm_bounds`` for an activation steeper than 1."""
    f = SLOPE.get(act, 1.0)
    return {k: v if k == "k" else v * f for k, v in bnd.items()} if f != 1.0 else bnd


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
@example(
    shape=(2, 5, 4, 3),
    dtype=np.float32,
    training=True,
    act="relu6",
    dy_memory="nchw",
    affine=True,
    momentum=0.37,
    eps=1e-3,
    kinks=False,
    p_strided=True,
    seed=7,
    parallel=True,
    chunks=3,
)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 24), st.integers(1, 6), st.integers(1, 6)),
    dtype=DTYPES,
    training=st.booleans(),
    act=st.sampled_from([None, "relu", "relu6", "hardswish"]),
    dy_memory=MEMORY,
    affine=st.booleans(),
    momentum=MOMENTA,
    eps=EPSILONS,
    kinks=st.booleans(),
    p_strided=st.booleans(),
    seed=st.integers(0, 2**16),
    parallel=st.booleans(),
    chunks=st.integers(1, 5),
)
def test_batch_norm_matches_reference(
    shape, dtype, training, act, dy_memory, affine, momentum, eps, kinks, p_strided, seed, parallel, chunks
):
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
            _check_batch_norm(
                shape, dtype, training, act, memory, dy_memory, affine, momentum, eps, kinks, p_strided, seed
            )
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
    forward = ACTIVATION[act][0]

    y, kcache = K.batch_norm(in_memory(x, memory), w, b, rm, rv, training, momentum, eps, activation=act)
    dx, dw, db = K.batch_norm_backward(in_memory(dy, dy_memory), kcache)

    axes = (0, 2, 3)
    mean, var = (f64[0].mean(axes), f64[0].var(axes)) if training else (f64[3], f64[4])
    bnd = scaled(batch_norm_bounds(x, w, b, dy, mean, var, eps, training), act)
    k = bnd["k"]
    assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == shape
    # relu and relu6 are 1-Lipschitz, hard-swish 1.5 (scaled): the bound of the normalised value
    # holds after the activation; hard-swish's own multiply and divide are two roundings more
    assert_within_bound(y, forward(pre), bnd["y"], k + (2 if act == "hardswish" else 0), dtype, "y")
    if act is not None:  # clipped outputs are exact: a value clearly past a kink gives 0 or 6 itself
        tol = bound_tolerance(bnd["y"], k, dtype)
        assert np.all(y[pre < ZERO_BELOW[act] - tol] == 0), "values below the kink must give exactly 0"
        if act == "relu6":
            assert np.all(y[pre > 6 + tol] == 6), "values above 6 must give exactly 6"
    if kinks and act != "hardswish":  # hard-swish's x * (x + 3) / 6 is not exact on integers
        np.testing.assert_array_equal(y, forward(pre))  # exact arithmetic: values exactly on 0 and 6
        assert (pre == 6).any() and ((pre == 0).any() or x.size == shape[1]), "the inputs miss the kinks"
    # Which elements pass the gradient is decided per element on the kernel's own output by torch's
    # rule: where a value lies within rounding of a kink either side is right, and the checks above
    # tie y to the reference everywhere else.
    g = kernel_gradient(act, y, kcache, dy)
    dx_ref, dw_ref, db_ref = F.batch_norm_backward(g, cache)
    assert_within_bound(dx, dx_ref, bnd["dx"], k, dtype, "dx")
    assert (dw is None) == (db is None) == (not affine)
    if affine:
        assert_within_bound(dw, dw_ref, bnd["dweight"], k, dtype, "dweight")
        assert_within_bound(db, db_ref, bnd["dbias"], k, dtype, "dbias")
    mean_b, var_b, k_run = running_stat_bounds(x, f64[3], f64[4])
    assert_within_bound(rm, rm_ref, mean_b, k_run, dtype, "running_mean")
    assert_within_bound(rv, rv_ref, var_b, k_run, dtype, "running_var")


@st.composite
def fuzz_batch_norm_case(draw):
    broken = draw(st.sampled_from([None, None, "x", "p", "training", "act", "momentum", "eps"]))
    dtype, seed = draw(DTYPES), draw(st.integers(0, 2**16))
    shape = draw(st.tuples(*[st.integers(1, 4)] * 4) | st.tuples(st.integers(2, 6), st.integers(1, 5)))
    x = fuzz.corrupt(draw, broken, "x", fuzz.values(shape, dtype, seed))
    p = fuzz.corrupt(
        draw, broken, "p", np.abs(fuzz.values(shape[1], dtype, seed + 1)) + 0.5
    )  # running_var > 0
    training = fuzz.corrupt(draw, broken, "training", draw(st.booleans()))
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
    except (ValueError, TypeError) as e:
        if act not in ACTIVATION:  # the reference has no activation to refuse: the kernel must
            return
        fuzz.refused_alike(e, F.batch_norm, ref_args, "batch norm")
        return
    event("batch norm ran")  # --hypothesis-show-statistics: how often the happy path is reached
    dtype = x.dtype
    ref_args = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in ref_args]
    pre, ref_cache = F.batch_norm(*ref_args)
    forward = ACTIVATION[act][0]
    x64 = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = (x64.mean(axes), x64.var(axes)) if training else (ref_args[3], ref_args[4])
    dy = fuzz.values(x.shape, dtype, seed + 2)
    bnd = scaled(batch_norm_bounds(x, p, p, dy, mean, var, eps, training), act)
    assert_within_bound(y, forward(pre), bnd["y"], bnd["k"] + (2 if act == "hardswish" else 0), dtype, "y")
    dx, dw, db = K.batch_norm_backward(dy, cache)
    g = kernel_gradient(act, y, cache, dy)
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
