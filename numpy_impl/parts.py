"""A global batch in fixed parts: the reductions of data-parallel training, in one fixed order.

A training step's batch of ``B`` rows is split into ``count`` parts (part ``p`` holds rows
``p*B//count`` to ``(p+1)*B//count``). Every sum over the batch (a batch norm's statistics and
gradient sums, a weight's gradient, the loss) is taken part by part, each part on its own rows
only, and the parts' results are added in part order::

    total = (((part_0 + part_1) + part_2) + ... + part_{count-1})

With ``world`` processes, process ``rank`` holds ``count / world`` consecutive parts. It sums
its own parts, gathers everyone's (``gather``: all the processes' arrays stacked in rank order)
and adds them up in the same order. A part's result depends on its rows alone, so one process
holding all the parts and four holding two each compute the same numbers, bit for bit: the
model ends with the same weights whatever the number of processes.

What it costs: a ring all-reduce sends about ``2 G`` values per process for ``G`` gradient
values; gathering the parts receives ``(count - count/world) G``. Which is why the gather
is reserved for the runs that ask for the same bits (``numpy_impl`` on either backend);
the torch backend all-reduces as ``DistributedDataParallel`` does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .functional._checks import check_int


def bounds(batch: int, count: int) -> list[int]:
    """The first row of each part, then ``batch``: ``count + 1`` numbers."""
    return [p * batch // count for p in range(count + 1)]


class Partials(list):
    """A gradient still in parts (one array per local part), added up by :meth:`Parts.total_grads`."""


class Parts:
    """Which parts of a global batch this process holds, and the ordered sum over all of them.

    Parameters
    ----------
    batch : the global batch's rows B (>= count)
    count : the parts P a batch is split into (>= 1)
    rank, world : this process's index and the number of processes; world divides count
    gather : ``gather(a) -> (world * k, ...)`` stacks every process's ``a`` of shape ``(k, ...)``
        in rank order (``torch.distributed.all_gather``); None with one process
    """

    def __init__(self, batch: int, count: int, rank: int = 0, world: int = 1, gather: Callable | None = None):
        fn = "Parts"
        count = check_int(fn, "count", count, 1)
        batch = check_int(fn, "batch", batch, count)
        world = check_int(fn, "world", world, 1)
        rank = check_int(fn, "rank", rank, 0)
        if rank >= world:
            raise ValueError(f"{fn}: rank must be below world ({world}), got {rank}")
        if count % world:
            raise ValueError(
                f"{fn}: the {count} parts of a batch must divide evenly among the {world} processes; "
                f"use a process count that divides {count}"
            )
        if world > 1 and gather is None:
            raise ValueError(f"{fn}: {world} processes need a gather function")
        self.batch, self.count, self.rank, self.world, self.gather = batch, count, rank, world, gather
        k = count // world
        edges = bounds(batch, count)[rank * k : (rank + 1) * k + 1]
        self.first = rank * k  # this process's first part
        self.rows = slice(edges[0], edges[-1])  # this process's rows of the global batch
        self.slices = [slice(a - edges[0], b - edges[0]) for a, b in zip(edges, edges[1:])]  # local rows

    def local(self, a):
        """This process's rows of an array of the whole batch."""
        return a[self.rows]

    def total(self, partials) -> np.ndarray:
        """The sum over every part of the batch, in part order, of this process's ``partials``
        (one array per local part, all of one shape) and the other processes'."""
        local = np.stack(partials)  # (k, ...)
        every = local if self.world == 1 else self.gather(local)  # (P, ...)
        out = every[0].copy()
        for a in every[1:]:
            out += a
        return out

    def total_grads(self, grads: dict) -> dict:
        """``grads`` with each :class:`Partials` added up over all the parts (one gather for all)."""
        names = [n for n, g in grads.items() if isinstance(g, Partials)]
        if not names:
            return dict(grads)
        dtype = grads[names[0]][0].dtype
        flat = np.concatenate(
            [np.stack([p.ravel() for p in grads[n]]) for n in names], axis=1
        )  # (k, G): this process's parts of every gradient
        summed = self.total(list(flat.astype(dtype, copy=False)))  # (G,)
        out, at = dict(grads), 0
        for n in names:
            shape = grads[n][0].shape
            size = int(np.prod(shape))
            out[n] = summed[at : at + size].reshape(shape)
            at += size
        return out
