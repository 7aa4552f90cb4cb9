"""``--nproc N``: a training command as a data-parallel job of N processes on this machine.

This process becomes the launcher: it starts N copies of the same command with the environment
``torchrun`` would give them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; each
with its share of the cores), then watches them. When one of them ends with an error or is
killed, the others are stopped at once and the launcher says which one and how: the job never
hangs on a lost peer. Under ``torchrun`` (``WORLD_SIZE`` set) the command trains as the rank it
was given, and torchrun does the watching; ``--nnodes``/``--rdzv-endpoint`` take it across
machines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from mobilenet.extras import require
from mobilenet.training import distributed, loop

from .common import int_at_least

DEFAULT_PARTS = 8  # a batch's parts in a data-parallel run: 1, 2, 4 or 8 processes give the same bits
GRACE = 5.0  # seconds a stopped worker gets to exit before it is killed
LAUNCHED = "MOBILENET_LAUNCHER"  # set in the workers this launcher starts
PEER_LOST = 75  # a worker's exit code when it stopped because another one did (EX_TEMPFAIL)
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _port(text):
    v = int_at_least(1)(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), got {v}")
    return v


def add_options(p) -> None:
    """--nproc, --parts and --master-port."""
    p.add_argument(
        "--nproc",
        type=int_at_least(1),
        default=None,
        help="train as a data-parallel job of N processes on this machine (torchrun works too)",
    )
    p.add_argument(
        "--parts",
        type=int_at_least(1),
        default=None,
        help=f"numpy, numba: take each batch's sums in P parts, so that any process count dividing P "
        f"gives the same weights (default {DEFAULT_PARTS} in a data-parallel run, else 1)",
    )
    p.add_argument("--master-port", type=_port, default=None, help="the job's TCP port (default: a free one)")


def parts(args) -> int:
    """``--parts``, or its default: :data:`DEFAULT_PARTS` in a data-parallel run on the NumPy
    model, 1 otherwise."""
    if args.parts is not None:
        return args.parts
    parallel = args.nproc is not None or distributed.in_job()
    return DEFAULT_PARTS if parallel and args.backend != "torch" else 1


def launch(args, cfg) -> int | None:
    """Start and watch ``args.nproc`` workers running this command (``args.argv``) for ``cfg``;
    their exit code. None where this process is to train itself (no ``--nproc``, ``--nproc 1``,
    or a worker of a job already)."""
    if args.nproc is None:
        return None
    loop.check_world(cfg, distributed.World(0, args.nproc))  # refused before any process starts
    if distributed.in_job():
        size = int(os.environ["WORLD_SIZE"]) if os.environ["WORLD_SIZE"].isdigit() else None
        if size != args.nproc:
            raise ValueError(
                f"--nproc {args.nproc} under a launcher that started {os.environ['WORLD_SIZE']} processes "
                "(WORLD_SIZE): drop --nproc when starting with torchrun"
            )
        return None
    if args.nproc == 1:
        return None
    require("torch", f"--nproc {args.nproc}")  # gloo is torch.distributed's
    port = args.master_port if args.master_port is not None else free_port()
    check_port(port)
    return watch(start_workers(args.argv, args.nproc, port), args.out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ValueError(
                f"--master-port {port} is already in use on this machine: choose another, or leave "
                "--master-port out for a free one"
            ) from None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start_workers(argv: list, n: int, port: int) -> list:
    threads = str(max(1, _cores() // n))
    base = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(n),
        LAUNCHED: "1",
    }
    for var in THREAD_VARIABLES:
        base.setdefault(var, threads)  # the cores shared out, unless the user chose
    procs = []
    for rank in range(n):
        env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(n)}
        out = None if rank == 0 else subprocess.DEVNULL  # rank 0 reports; every rank's errors show
        procs.append(subprocess.Popen([sys.executable, "-m", "mobilenet.cli", *argv], env=env, stdout=out))
    return procs


def _how(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def watch(procs: list, out) -> int:
    """Wait for every worker; on the first failure stop the rest and explain. The exit code: 0,
    the failed worker's (1 or 2), 1 for a killed one, 130 on Ctrl-C."""
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                # the cause, rather than a worker that stopped because it lost the cause
                rank, code = min(failed, key=lambda rc: rc[1] == PEER_LOST)
                stop(procs)
                how = "lost contact with the others" if code == PEER_LOST else _how(code)
                print(
                    f"mobilenet: error: worker {rank} of {len(procs)} {how}, so the job was stopped; "
                    f"the last checkpoint in {str(out)!r} is intact: continue with --resume",
                    file=sys.stderr,
                )
                return code if code in (1, 2) else 1
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        stop(procs)
        print("mobilenet: interrupted; the workers were stopped", file=sys.stderr)
        return 130


def stop(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + GRACE
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def as_job(args, cfg, run) -> tuple[int, dict | None]:
    """``run(cfg, args.out, resume=..., progress=..., world=...)`` as this process's share of the
    job ``args`` asks for (a launcher starts and watches the workers instead): ``(exit code,
    metrics)``, the metrics only where this process reports them (alone, or rank 0)."""
    code = launch(args, cfg)
    if code is not None:
        return code, None
    with job() as world:
        metrics = run(cfg, args.out, resume=args.resume, progress=not args.no_progress, world=world)
    return 0, metrics if world.main else None


@contextlib.contextmanager
def job():
    """This process's place in the job it was started in (:data:`distributed.SINGLE` outside one)."""
    if distributed.in_job():
        require("torch", "a data-parallel run")
    world = distributed.join()
    try:
        yield world
    except distributed.PeerLost:
        if os.environ.get(LAUNCHED):  # the launcher names the worker that failed, once
            raise SystemExit(PEER_LOST) from None
        raise
    finally:
        distributed.leave(world)
