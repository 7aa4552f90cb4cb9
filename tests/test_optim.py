"""Optimisers and schedules against ``torch.optim`` on identical gradients.

The gradients are random and different at every step (never all ones), and the same arrays
go to both sides; in float64 the two must agree to a few ulps after several steps, since
they evaluate the same expressions in the same order.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from numpy_impl import mobilenet_v2
from numpy_impl.optim import SGD, CosineWithWarmup, ExponentialDecay, RMSprop, StepDecay, decay_groups

STEPS = 6


def _run_both(make_np, make_torch, seed, lr_at=None):
    rng = np.random.default_rng(seed)
    shapes = {"w": (3, 4), "b": (4,), "frozen": (2,)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = make_np({k: params[k] for k in ("w", "b")}, params["frozen"])
    topt = make_torch([tparams["w"], tparams["b"]], tparams["frozen"])
    for t in range(STEPS):
        grads = {k: rng.standard_normal(s) for k, s in shapes.items()}
        del grads["frozen"]  # no gradient: both sides must leave it alone
        if lr_at is not None:
            opt.set_lr(lr_at(t))
            for g in topt.param_groups:
                g["lr"] = lr_at(t) * g.get("lr_scale", 1.0)
        opt.step(grads)
        for k, g in grads.items():
            tparams[k].grad = torch.tensor(g)
        topt.step()
    return params, {k: v.detach().numpy() for k, v in tparams.items()}, opt, topt


@given(
    seed=st.integers(0, 2**16),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    nesterov=st.booleans(),
    dampening=st.sampled_from([0.0, 0.3]),
    weight_decay=st.sampled_from([0.0, 1e-2]),
    maximize=st.booleans(),
)
def test_sgd_matches_torch(seed, momentum, nesterov, dampening, weight_decay, maximize):
    if nesterov and (momentum == 0 or dampening != 0):
        return  # torch rejects it too: tested below
    kw = dict(
        lr=0.1,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
    )
    p, tp, _, _ = _run_both(
        lambda ps, frozen: SGD([{"params": ps}, {"params": {"frozen": frozen}}], **kw),
        lambda ps, frozen: torch.optim.SGD([{"params": ps}, {"params": [frozen]}], **kw),
        seed,
    )
    for k in p:
        np.testing.assert_allclose(p[k], tp[k], rtol=1e-13, atol=1e-15, err_msg=k)


@given(
    seed=st.integers(0, 2**16),
    momentum=st.sampled_from([0.0, 0.9]),
    centered=st.booleans(),
    weight_decay=st.sampled_from([0.0, 1e-2]),
    alpha=st.sampled_from([0.9, 0.99]),
    maximize=st.booleans(),
)
def test_rmsprop_matches_torch(seed, momentum, centered, weight_decay, alpha, maximize):
    kw = dict(
        lr=0.01,
        alpha=alpha,
        eps=1e-3,
        weight_decay=weight_decay,
        momentum=momentum,
        centered=centered,
        maximize=maximize,
    )
    p, tp, opt, topt = _run_both(
        lambda ps, frozen: RMSprop([{"params": ps}, {"params": {"frozen": frozen}}], **kw),
        lambda ps, frozen: torch.optim.RMSprop([{"params": ps}, {"params": [frozen]}], **kw),
        seed,
    )
    for k in p:
        np.testing.assert_allclose(p[k], tp[k], rtol=1e-12, atol=1e-14, err_msg=k)
    # the optimiser state too (what a checkpoint carries)
    tstate = topt.state[topt.param_groups[0]["params"][0]]
    np.testing.assert_allclose(opt.state["w"]["square_avg"], tstate["square_avg"].numpy(), rtol=1e-12)


@pytest.mark.parametrize("ours,theirs", [(SGD, torch.optim.SGD), (RMSprop, torch.optim.RMSprop)])
def test_defaults_are_torchs(ours, theirs):
    """Code written for torch.optim without explicit options trains the same here."""
    import inspect

    mine = inspect.signature(ours.__init__).parameters
    torchs = inspect.signature(theirs.__init__).parameters
    for name, p in mine.items():
        if name not in ("self", "params"):
            assert p.default == torchs[name].default, name


def test_maximize_ascends():
    """maximize steps along +g: one plain SGD step from 0 lands on lr * g."""
    g = np.array([0.5, -2.0])
    opt = SGD({"w": np.zeros(2)}, lr=0.1, maximize=True)
    opt.step({"w": g})
    np.testing.assert_allclose(opt.param_groups[0]["params"]["w"], 0.1 * g, rtol=1e-15)


def test_set_lr_applies_group_scale_and_schedule_is_followed():
    sched = CosineWithWarmup(0.1, total_steps=STEPS, warmup_steps=2)
    p, tp, _, _ = _run_both(
        lambda ps, frozen: SGD(
            [{"params": ps, "lr_scale": 0.5}, {"params": {"frozen": frozen}}], momentum=0.9
        ),
        lambda ps, frozen: torch.optim.SGD(
            [{"params": ps, "lr_scale": 0.5}, {"params": [frozen]}], momentum=0.9
        ),
        seed=3,
        lr_at=sched,
    )
    for k in p:
        np.testing.assert_allclose(p[k], tp[k], rtol=1e-13, atol=1e-15, err_msg=k)


def test_state_dict_roundtrip_continues_identically():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5,))
    grads = [{"w": rng.standard_normal(5)} for _ in range(4)]
    a = RMSprop({"w": w.copy()}, lr=0.01, momentum=0.9, centered=True)
    for g in grads:
        a.step(g)
    b_params = {"w": w.copy()}
    b = RMSprop(b_params, lr=0.01, momentum=0.9, centered=True)
    for g in grads[:2]:
        b.step(g)
    c = RMSprop({"w": b_params["w"].copy()}, lr=0.01, momentum=0.9, centered=True).load_state_dict(
        b.state_dict()
    )
    for g in grads[2:]:
        c.step(g)
    assert c.steps == 4
    np.testing.assert_array_equal(c.param_groups[0]["params"]["w"], a.param_groups[0]["params"]["w"])


def _torch_lrs(opt, sched, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_matches_torch_sequential_lr():
    base, total, warm, min_lr = 0.2, 40, 5, 1e-3
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm, eta_min=min_lr),
        ],
        milestones=[warm],
    )
    ours = CosineWithWarmup(base, total, warm, min_lr)
    np.testing.assert_allclose(
        [ours(t) for t in range(total + 1)], _torch_lrs(opt, sched, total + 1), rtol=1e-12
    )


def test_step_and_exponential_decay_match_torch():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    np.testing.assert_allclose(
        [StepDecay(0.1, 7, 0.5)(t) for t in range(30)], _torch_lrs(opt, sched, 30), rtol=1e-12
    )
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)
    np.testing.assert_allclose(
        [ExponentialDecay(0.1, 0.98)(t) for t in range(30)], _torch_lrs(opt, sched, 30), rtol=1e-12
    )
    smooth = ExponentialDecay(0.1, 0.5, every=4, staircase=False)
    assert math.isclose(smooth(2), 0.1 * 0.5**0.5) and ExponentialDecay(0.1, 0.5, every=4)(3) == 0.1


def test_decay_groups_exempt_bn_and_depthwise():
    m = mobilenet_v2(width_mult=0.35, num_classes=3, seed=0)
    decay, exempt = decay_groups(m, 4e-5)
    assert set(decay["params"]) | set(exempt["params"]) == set(m.params)
    assert not set(decay["params"]) & set(exempt["params"])
    assert exempt["weight_decay"] == 0 and decay["weight_decay"] == 4e-5
    assert "features.1.conv.0.0.weight" in exempt["params"]  # the first block's depthwise
    assert "features.0.1.weight" in exempt["params"] and "features.0.0.weight" in decay["params"]
    assert "classifier.1.weight" in decay["params"]
    assert decay_groups(m, 4e-5, exempt_bn_and_depthwise=False)[0]["params"].keys() == m.params.keys()


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: SGD({"w": np.zeros(2)}, lr=-1), ValueError, "lr"),
        (lambda: SGD({"w": np.zeros(2)}, nesterov=True), ValueError, "nesterov"),
        (lambda: SGD({"w": np.zeros(2)}, maximize="yes"), TypeError, "maximize must be a bool"),
        (lambda: RMSprop({"w": np.zeros(2)}, centered=1), TypeError, "centered must be a bool"),
        (lambda: SGD({"w": [0.0]}), TypeError, "'w'"),
        (lambda: SGD({"w": np.zeros(2, np.int64)}), TypeError, "float32/float64"),
        (lambda: SGD([]), TypeError, "params"),
        (
            lambda: SGD([{"params": {"w": np.zeros(2)}}, {"params": {"w": np.zeros(2)}}]),
            ValueError,
            "more than one",
        ),
        (lambda: RMSprop({"w": np.zeros(2)}, alpha=1.5), ValueError, "alpha"),
        (lambda: SGD({"w": np.zeros(2)}).step({"w": np.zeros(3)}), ValueError, r"shape \(2,\)"),
        (lambda: SGD({"w": np.zeros(2)}).step([np.zeros(2)]), TypeError, "grads"),
        (
            lambda: SGD({"w": np.zeros(2)}).load_state_dict({"v/momentum_buffer": np.zeros(2)}),
            ValueError,
            "'v'",
        ),
        (lambda: CosineWithWarmup(0.1, 10, 10), ValueError, "warmup_steps"),
        (lambda: CosineWithWarmup(0.1, 10.0), TypeError, "total_steps"),
        (lambda: StepDecay(0.1, 0), ValueError, "step_size"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
