"""numpy_impl.detector: SSDLite against its torch mirror in float64 (outputs, the SSD loss, every
gradient, the running statistics), on the NumPy and the Numba backends."""

import numpy as np
import pytest
import torch

import mobilenet_arch as A
from mobilenet.verify import group_errors
from numpy_impl import boxes as Bx
from numpy_impl.detection import ssd_loss, ssd_loss_backward
from numpy_impl.detector import ssdlite
from torch_impl.detector import ssdlite as torch_ssdlite

from .test_detection import torch_ssd_loss


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def targets(model, n, resolution, rng):
    """Matched targets of random boxes on ``model``'s default boxes."""
    defaults = model.default_boxes(resolution)
    labels, locs = [], []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        xy = rng.uniform(0, 0.6, (k, 2))
        gt = np.concatenate([xy, xy + rng.uniform(0.15, 0.4, (k, 2))], axis=1).clip(0, 1)
        lab, box = Bx.match(gt, rng.integers(1, model.num_classes, k), defaults)
        labels.append(lab)
        locs.append(Bx.encode(box, defaults))
    return np.stack(locs), np.stack(labels)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("width, resolution, extras", [(0.35, 96, (64, 32)), (0.5, 64, A.SSDLITE_EXTRAS)])
def test_ssdlite_matches_torch_in_float64(backend, width, resolution, extras):
    rng = np.random.default_rng(3)
    model = ssdlite(width, 5, dtype=np.float64, backend=backend, seed=2, extras=extras)
    mirror = torch_ssdlite(width, 5, extras=extras).double()
    assert list(mirror.state_dict()) == list(model.state_dict())  # the same names, in torch's order
    mirror.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    # 8 images: the last extras are 1x1 maps, where batch norm's statistics are over N numbers; at
    # N = 3, with the extras' small N(0, 0.03) init, the float64 backward loses digits to
    # cancellation (input gradient 7.7e-9 relative at N = 3, 1.7e-12 at N = 8)
    n = 8
    x = rng.standard_normal((n, 3, resolution, resolution))
    loc_t, labels = targets(model, n, resolution, rng)

    loc, conf = model.forward(x)
    loss, cache = ssd_loss(loc, conf, loc_t, labels)
    dx = model.backward(*ssd_loss_backward(1.0, cache))

    xt = torch.tensor(x, requires_grad=True)
    tloc, tconf = mirror(xt)
    tloss = torch_ssd_loss(tloc, tconf, torch.tensor(loc_t), torch.tensor(labels), 3)
    tloss.backward()

    assert loc.shape == (n, len(model.default_boxes(resolution)), 4) and conf.shape[2] == 5
    assert rel(loc, tloc.detach()) <= 1e-9 and rel(conf, tconf.detach()) <= 1e-9
    assert loss == pytest.approx(tloss.item(), rel=1e-9)
    assert rel(dx, xt.grad) <= 1e-9
    tparams = dict(mirror.named_parameters())
    assert model.grads.keys() == tparams.keys()
    # floored by the largest gradient: some (a BN bias before a residual sum) are rounding noise
    # around a true 0, where a relative error means nothing (mobilenet verify's rule)
    errs = group_errors(model.grads, {k: p.grad.numpy() for k, p in tparams.items()})
    worst = max(errs, key=errs.get)
    assert errs[worst] <= 1e-9, worst
    bufs = group_errors(dict(model.named_buffers()), {k: b.numpy() for k, b in mirror.named_buffers()})
    assert max(bufs.values()) <= 1e-9, max(bufs, key=bufs.get)


def test_default_boxes_follow_the_feature_maps():
    model = ssdlite(0.35, 3, extras=(32, 32))
    sizes = model.feature_sizes(100)
    assert sizes == [(7, 7), (4, 4), (2, 2), (1, 1)]
    loc, conf = model.eval().forward(np.zeros((1, 3, 100, 100), np.float32))
    assert loc.shape[1] == conf.shape[1] == len(model.default_boxes(100)) == 6 * (49 + 16 + 4 + 1)


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda: A.ssdlite_spec(1.0, 1), ValueError, "num_classes must be an int >= 2"),
        (lambda: A.ssdlite_spec(1.0, 5, extras=()), ValueError, "extras must be channel counts"),
        (lambda: ssdlite(0.35, 3).forward(np.zeros((1, 3, 16, 16), np.float32)), ValueError, "H, W >= 32"),
        (
            lambda: ssdlite(0.35, 3).backward(np.zeros((1, 2, 4)), np.zeros((1, 2, 3))),
            RuntimeError,
            "call forward",
        ),
    ],
)
def test_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
