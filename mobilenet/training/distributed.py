"""One process of a data-parallel job: who it is, and the collectives the runners call.

A job is ``world`` processes, each started with the environment ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; ``mobilenet train --nproc N`` sets the same
for N local processes). They meet through ``torch.distributed`` on its CPU backend, gloo, which
also carries the collectives: NumPy buffers go through ``torch.from_numpy`` without a copy.

Rank 0 is the job's voice: it alone writes checkpoints and metrics, evaluates, and shows
progress. Every rank trains on its own rows of each global batch (``numpy_impl.parts``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT = timedelta(minutes=30)  # a collective waits this long for a silent peer (gloo's default)


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (rank 0 of 1: a run on its own)."""

    rank: int = 0
    size: int = 1
    # what this process has spent in collectives so far: calls, seconds, bytes sent
    spent: dict = field(default_factory=lambda: {"calls": 0, "seconds": 0.0, "bytes": 0}, compare=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, a: np.ndarray) -> np.ndarray:
        """Every process's ``a`` (one shape and dtype everywhere), stacked in rank order along axis 0."""
        if self.size == 1:
            return a
        import torch
        import torch.distributed as dist

        t = torch.from_numpy(np.ascontiguousarray(a))
        out = [torch.empty_like(t) for _ in range(self.size)]
        self._timed(t.numel() * t.element_size(), dist.all_gather, out, t)
        return np.concatenate([o.numpy() for o in out])

    def all_sum(self, a: np.ndarray) -> np.ndarray:
        """The sum of every process's ``a`` (a ring all-reduce: its order of addition is gloo's)."""
        if self.size == 1:
            return a
        import torch
        import torch.distributed as dist

        t = torch.from_numpy(np.array(a))
        self._timed(t.numel() * t.element_size(), dist.all_reduce, t)
        return t.numpy()

    def broadcast(self, obj):
        """Rank 0's ``obj`` (anything picklable), on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        self._timed(0, dist.broadcast_object_list, box, src=0)
        return box[0]

    def _timed(self, nbytes: int, op, *args, **kwargs):
        t0 = time.perf_counter()
        _collective(op, *args, **kwargs)
        self.spent["calls"] += 1
        self.spent["seconds"] += time.perf_counter() - t0
        self.spent["bytes"] += nbytes


SINGLE = World()


class PeerLost(ConnectionError):
    """Another process of the job stopped: the collective it was part of cannot complete."""


def _collective(op, *args, **kwargs):
    try:
        return op(*args, **kwargs)
    except RuntimeError:  # gloo: a peer's connection closed, or the timeout passed
        raise PeerLost(
            "another process of this data-parallel job stopped, so this one cannot go on: see that "
            "process's error, then continue from the last checkpoint with --resume"
        ) from None


def in_job(environ=None) -> bool:
    """Whether this process was started as part of a job (``WORLD_SIZE`` is set)."""
    return "WORLD_SIZE" in (os.environ if environ is None else environ)


def join(environ=None) -> World:
    """Join the job the environment describes (``torch.distributed.init_process_group`` on gloo),
    or return :data:`SINGLE` outside a job."""
    env = os.environ if environ is None else environ
    if not in_job(env):
        return SINGLE
    missing = [k for k in ENV if k not in env]
    if missing:
        raise ValueError(
            f"a data-parallel process needs the environment variables {', '.join(ENV)}; "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set (start it with "
            "torchrun or mobilenet train --nproc)"
        )
    try:
        rank, size, port = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["MASTER_PORT"])
    except ValueError:
        raise ValueError(
            f"RANK, WORLD_SIZE and MASTER_PORT must be whole numbers, got {env['RANK']!r}, "
            f"{env['WORLD_SIZE']!r}, {env['MASTER_PORT']!r}"
        ) from None
    if size < 1 or not 0 <= rank < size or not 0 < port < 65536:
        raise ValueError(
            f"need 0 <= RANK < WORLD_SIZE and 0 < MASTER_PORT < 65536, got {rank}, {size}, {port}"
        )
    import torch.distributed as dist

    if not dist.is_initialized():
        try:
            dist.init_process_group("gloo", rank=rank, world_size=size, timeout=TIMEOUT)
        except (RuntimeError, OSError) as e:  # DistNetworkError (a RuntimeError): the port, the address
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "in use" in text.lower():
                raise OSError(
                    f"port {port} on {env['MASTER_ADDR']} is already in use: choose another with "
                    "--master-port (torchrun: --master-port or --rdzv-endpoint)"
                ) from None
            raise OSError(
                f"could not join the data-parallel job at {env['MASTER_ADDR']}:{port}: {text}"
            ) from None
    return World(rank, size)


def leave(world: World) -> None:
    """Leave the job (after its last collective)."""
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
