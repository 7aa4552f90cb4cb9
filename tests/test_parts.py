"""numpy_impl.parts and the part-by-part training step: how a global batch splits among
processes, the ordered total, and that a step taken in parts is the step taken at once (to
rounding), for every model, loss and layer the parts touch. The multi-process jobs themselves
are in test_distributed.py."""

import dataclasses
import threading

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mobilenet_arch as A
from mobilenet.detection import config as DC
from mobilenet.detection import train as DT
from mobilenet.detection.numpy_runner import Runner as DetectRunner
from mobilenet.training import classify, distributed
from mobilenet.training.config import TrainConfig
from mobilenet.training.numpy_runner import parts_of
from mobilenet.verify import group_errors
from numpy_impl import functional as F
from numpy_impl import nn
from numpy_impl.parts import Partials, Parts, bounds


@given(st.integers(1, 8), st.integers(0, 3), st.integers(0, 20), st.data())
def test_the_ranks_rows_cover_the_batch_in_order_and_each_part_is_whole(world_log, k_log, extra, data):
    world = 2 ** (world_log % 3)
    count = world * 2**k_log
    batch = count + extra
    edges = bounds(batch, count)
    rows, parts_seen = [], []
    for rank in range(world):
        p = Parts(batch, count, rank, world, gather=lambda a: a)
        assert len(p.slices) == count // world
        rows += list(range(batch)[p.rows])
        for s in p.slices:  # local slices, back to global rows: exactly one part of the split
            lo, hi = p.rows.start + s.start, p.rows.start + s.stop
            assert hi > lo and lo in edges and hi in edges
            parts_seen.append((lo, hi))
    assert rows == list(range(batch))
    assert parts_seen == list(zip(edges, edges[1:]))


def test_parts_refuse_what_cannot_split():
    with pytest.raises(ValueError, match="divide evenly among the 3 processes"):
        Parts(16, 8, 0, 3, gather=lambda a: a)
    with pytest.raises(ValueError, match="rank must be below world"):
        Parts(16, 8, 2, 2, gather=lambda a: a)
    with pytest.raises(ValueError, match="batch must be >= 8"):
        Parts(4, 8)
    with pytest.raises(ValueError, match="need a gather"):
        Parts(16, 8, 0, 2)
    with pytest.raises(TypeError, match="count must be an int"):
        Parts(16, 2.0)


@given(st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_the_total_over_two_processes_is_the_one_process_total_bit_for_bit(k, seed):
    """Rank 0 of 2 gathering rank 1's parts adds them in the order one process does."""
    rng = np.random.default_rng(seed)
    partials = [
        (rng.standard_normal(7) * 10.0 ** rng.integers(-3, 4)).astype(np.float32) for _ in range(2 * k)
    ]
    one = Parts(2 * k, 2 * k).total(partials)
    other = np.stack(partials[k:])
    rank0 = Parts(2 * k, 2 * k, 0, 2, gather=lambda a: np.concatenate([a, other]))
    np.testing.assert_array_equal(rank0.total(partials[:k]), one)
    expected = partials[0].copy()
    for a in partials[1:]:
        expected += a  # left to right, in part order
    np.testing.assert_array_equal(one, expected)


def test_total_grads_adds_up_partials_and_keeps_totals():
    p = Parts(4, 2)
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    got = p.total_grads({"w": Partials([a, b]), "bn": np.array([5.0]), "v": Partials([a[0], a[1]])})
    np.testing.assert_array_equal(got["w"], a + b)
    np.testing.assert_array_equal(got["bn"], [5.0])
    np.testing.assert_array_equal(got["v"], a[0] + a[1])


def test_dropout_gives_a_row_its_mask_whichever_process_holds_it():
    layer = nn.Dropout(A.Dropout(0.5), F, np.float64, None)
    x = np.ones((8, 5))
    masks = []
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        layer.rng = np.random.default_rng(3)  # the step's stream, the same in every process
        layer.parts = Parts(8, 4, rank, world, gather=lambda a: a)
        layer.forward(x[layer.parts.rows])
        masks.append(layer.mask)
    np.testing.assert_array_equal(masks[0], np.concatenate(masks[1:]))


def _batch(n, res, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, res, res)), rng.integers(0, 5, n)


def _update(make, batch, parts):
    """A fresh runner's first step taken in ``parts``: its output and every array's change."""
    runner = make(parts)
    start = {k: v.copy() for k, v in runner.state_arrays().items() if k.startswith("model/")}
    runner.set_lr(0.05)
    out = runner.train_step(batch, 7)
    return out, {k: v - start[k] for k, v in runner.state_arrays().items() if k in start}


@pytest.mark.parametrize(
    "backend, arch, loss",
    [("numpy", "v3-small", "softmax"), ("numba", "v2", "softmax"), ("numba", "v1", "arcface")],
)
def test_a_step_in_parts_is_the_step_at_once_to_rounding(backend, arch, loss):
    """float64: every weight's update (batch norm statistics and gradient sums, convolutions,
    depthwise, squeeze-and-excite, the classifier, ArcFace's centres) and the running statistics."""
    cfg = TrainConfig(
        arch=arch, backend=backend, dtype="float64", width_mult=0.25, batch_size=12, dropout=0.0
    )
    cfg = dataclasses.replace(cfg, loss=loss, embed_dim=8)
    batch = _batch(12, 32)
    make = lambda parts: classify.make_runner(dataclasses.replace(cfg, parts=parts), 5)  # noqa: E731
    whole, a = _update(make, batch, 1)
    parted, b = _update(make, batch, 4)
    assert parted["correct"] == whole["correct"]
    assert parted["loss"] == pytest.approx(whole["loss"], rel=1e-12)
    errs = group_errors(a, b)  # relative to each group's largest update (a noise floor)
    worst = max(errs, key=errs.get)
    assert errs[worst] <= 1e-9, (worst, errs[worst])
    assert max(np.abs(v).max() for v in a.values()) > 1e-4  # it did move


def test_a_detection_step_in_parts_is_the_step_at_once_to_rounding():
    cfg = DC.DetectConfig(width_mult=0.25, resolution=64, train_size=8, test_size=1, backend="numba")
    cfg = dataclasses.replace(cfg, dtype="float64", batch_size=8)
    train, _ = DT.load_split(cfg)
    batch = DT.Detection(cfg, train, train).batch(np.arange(8), np.random.default_rng(0))
    make = lambda parts: DetectRunner(dataclasses.replace(cfg, parts=parts), len(train.classes))  # noqa: E731
    whole, a = _update(make, batch, 1)
    parted, b = _update(make, batch, 2)
    for key in whole:
        assert parted[key] == pytest.approx(whole[key], rel=1e-10), key
    errs = group_errors(a, b)
    worst = max(errs, key=errs.get)
    assert errs[worst] <= 1e-9, (worst, errs[worst])


def test_one_process_with_one_part_takes_the_whole_batch_path():
    cfg = TrainConfig(backend="numpy", width_mult=0.25, batch_size=4)
    assert parts_of(cfg, distributed.SINGLE, 4) is None
    assert parts_of(dataclasses.replace(cfg, parts=2), distributed.SINGLE, 4).count == 2


class ThreadWorld:
    """A data-parallel job's view for one of ``n`` threads of this process: ``gather`` meets the
    other threads at a barrier (the collectives' semantics, without processes)."""

    def __init__(self, rank, n, barrier, box):
        self.rank, self.size, self._barrier, self._box = rank, n, barrier, box
        self.spent = {"calls": 0, "seconds": 0.0, "bytes": 0}

    main = property(lambda self: self.rank == 0)

    def gather(self, a):
        self._box[self.rank] = a
        self._barrier.wait()
        out = np.concatenate(list(self._box))
        self._barrier.wait()  # every thread has read before the next gather writes
        return out

    def broadcast(self, obj):
        return obj  # the runners start alike (same seed)


def _job_steps(make, batches, n) -> dict:
    """Rank 0's state after ``batches`` steps of a job of ``n`` threads, each with its runner."""
    barrier, box = threading.Barrier(n), [None] * n
    runners = [make() for _ in range(n)]
    errors = []

    def work(rank):
        try:
            runners[rank].world = ThreadWorld(rank, n, barrier, box)
            for i, batch in enumerate(batches):
                runners[rank].set_lr(0.05)
                runners[rank].train_step(batch, i)
        except BaseException as e:  # a failed thread must not leave the others at the barrier
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return runners[0].state_arrays()


def _thread_safe(backend) -> bool:
    """numba's parallel kernels may be launched from several threads at once (omp, tbb layers)."""
    if backend != "numba":
        return True
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:  # no parallel kernel has run yet: run one
        cfg = TrainConfig(backend="numba", width_mult=0.25, batch_size=2)
        classify.make_runner(cfg, 2).predict(np.zeros((2, 3, 32, 32), np.float32))
        return numba.threading_layer() in ("omp", "tbb")


@pytest.mark.parametrize(
    "backend, arch, loss, dropout",
    [
        ("numpy", "v3-small", "softmax", 0.5),
        ("numba", "v2", "softmax", 0.2),
        ("numba", "v3-large", "arcface", 0.0),
    ],
)
def test_two_and_four_workers_end_bit_identical_to_one(backend, arch, loss, dropout):
    """Every layer, loss and dropout of the step, run by 1, 2 and 4 workers (threads meeting at
    each collective): the same bits. A GEMM's rows round by the shape of their block, which is
    why every layer runs part by part."""
    if not _thread_safe(backend):
        pytest.skip("numba's threading layer is workqueue: kernels cannot run from two threads")
    cfg = TrainConfig(arch=arch, backend=backend, width_mult=0.25, batch_size=16, parts=4, dropout=dropout)
    cfg = dataclasses.replace(cfg, loss=loss, embed_dim=8)
    batches = [(x.astype(np.float32), y) for x, y in (_batch(16, 32, seed) for seed in (1, 2))]
    one = _job_steps(lambda: classify.make_runner(cfg, 5), batches, 1)
    for n in (2, 4):
        other = _job_steps(lambda: classify.make_runner(cfg, 5), batches, n)
        differ = [k for k in one if not np.array_equal(one[k], other[k])]
        assert not differ, f"{n} workers: {len(differ)} arrays differ, e.g. {differ[:3]}"


def test_a_detection_job_ends_bit_identical_to_one_process():
    if not _thread_safe("numba"):
        pytest.skip("numba's threading layer is workqueue: kernels cannot run from two threads")
    cfg = DC.DetectConfig(width_mult=0.25, resolution=64, train_size=8, test_size=1, backend="numba")
    cfg = dataclasses.replace(cfg, batch_size=8, parts=4)
    train, _ = DT.load_split(cfg)
    batch = DT.Detection(cfg, train, train).batch(np.arange(8), np.random.default_rng(0))
    one = _job_steps(lambda: DetectRunner(cfg, len(train.classes)), [batch], 1)
    two = _job_steps(lambda: DetectRunner(cfg, len(train.classes)), [batch], 2)
    differ = [k for k in one if not np.array_equal(one[k], two[k])]
    assert not differ, f"{len(differ)} arrays differ, e.g. {differ[:3]}"
