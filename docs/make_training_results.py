"""The long runs behind the training chapters (about half an hour on 2 cores, over an hour with ``detect``).

    python docs/make_training_results.py            # all of them
    python docs/make_training_results.py --only overlay train

Each writes ``docs/results/<name>.json``; then ``docs/make_figures.py`` draws the tables and
figures from those JSON files. ``detect`` also writes the trained detector's detections on eight
held-out scenes into its JSON, from which the grid of predictions is drawn.

* ``overlay``: float32 loss curves, step by step, of the NumPy model (numba backend) and the
  torch model from the same weights and batches (dropout 0).
* ``train``: ``mobilenet train --arch v2 --width-mult 0.5 --resolution 32 --data digits
  --backend numba --epochs 15 --seed 0``.
* ``transfer``: ``mobilenet transfer`` (``mobilenet pretrain`` on the glyph corpus, then adapt
  to the digits and to the held-out glyph classes, k = 1, 5 and 20, three seeds).
* ``embed``: ``mobilenet pretrain --loss arcface`` from the transfer job's pretraining, then
  ``mobilenet embed`` on the held-out glyph classes.
* ``v3``: ``mobilenet train --arch v3-small --width-mult 1`` with ``train``'s other settings.
* ``detect``: ``mobilenet detect train --data scenes --seed 0`` on numba and on torch (about 35
  minutes), its curves and a grid of predictions on held-out scenes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np
import torch

import numpy_impl
from mobilenet import cli
from mobilenet.apps import embed as E
from mobilenet.apps import transfer as Tr
from mobilenet.training import config as C
from mobilenet.training.classify import Classification, load_split, make_runner
from mobilenet.training.config import TrainConfig
from mobilenet.training.loop import Trainer
from torch_impl import state_dict_to_numpy

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"


def _machine() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "threads": numba.get_num_threads(),
    }


def _float64_warm_run() -> dict:
    """The whole-run equivalence test's setting (tests/test_training_classify.py): 200 float32 warm-up
    steps, then 50 float64 steps of the NumPy model and of torch from the same weights."""
    warm_cfg = TrainConfig(
        width_mult=0.35,
        backend="torch",
        batch_size=8,
        lr=0.02,
        dropout=0.0,
        epochs=1,
        train_limit=1600,
        seed=1,
    )
    train, test = load_split(warm_cfg)
    runner = make_runner(warm_cfg, 10)
    Trainer(Classification(warm_cfg, train, test.subset(np.arange(8))), runner, progress=False).fit()
    warm = {
        k: v.astype(np.float64) if v.dtype.kind == "f" else v
        for k, v in state_dict_to_numpy(runner.model.state_dict()).items()
    }
    cfg = dataclasses.replace(warm_cfg, dtype="float64", lr=1e-3, warmup_epochs=0.0, train_limit=400, seed=2)
    train, test = load_split(cfg)
    curves = {}
    for backend in ("numpy", "torch"):
        c = dataclasses.replace(cfg, backend=backend)
        r = make_runner(c, 10)
        r.model.load_state_dict(
            warm if backend == "numpy" else {k: torch.from_numpy(v) for k, v in warm.items()}
        )
        trainer = Trainer(Classification(c, train, test.subset(np.arange(8))), r, progress=False)
        trainer.fit()
        curves[backend] = trainer.step_losses
    return curves


def overlay(work: Path) -> dict:
    cfg = TrainConfig(
        width_mult=0.5, resolution=32, backend="numba", epochs=4, dropout=0.0, train_limit=1280, seed=0
    )
    train, test = load_split(cfg)
    curves, acc = {}, {}
    for backend in ("numba", "torch"):
        c = dataclasses.replace(cfg, backend=backend)
        trainer = Trainer(Classification(c, train, test), make_runner(c, 10), progress=True)
        m = trainer.fit()
        curves[backend], acc[backend] = trainer.step_losses, m["test_accuracy"]
    a, b = np.array(curves["numba"]), np.array(curves["torch"])
    rel = np.abs(a - b) / b
    c64 = _float64_warm_run()
    a64, b64 = np.array(c64["numpy"]), np.array(c64["torch"])
    rel64 = np.abs(a64 - b64) / b64
    first = int(np.argmax(rel > 1e-2)) if np.any(rel > 1e-2) else None
    return {
        "config": cfg.to_dict(),
        "steps": len(a),
        "losses": {"numba": a.tolist(), "torch": b.tolist()},
        "test_accuracy": acc,
        "max_rel_diff_first_10_steps": float(rel[:10].max()),
        "first_step_rel_diff_above_1e-2": first,
        "median_rel_diff": float(np.median(rel)),
        "float64_warm": {
            "steps": len(a64),
            "max_rel_diff": float(rel64.max()),
            "losses": {"numpy": a64.tolist(), "torch": b64.tolist()},
        },
    }


def _digits_run(out: Path, arch: str, width: str) -> dict:
    args = ["train", "--arch", arch, "--width-mult", width, "--resolution", "32", "--data", "digits"]
    args += ["--backend", "numba", "--epochs", "15", "--seed", "0", "--out", str(out)]
    assert cli.main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    m["command"] = "mobilenet " + " ".join(args[:-1]) + " DIR"
    return m


def train(work: Path) -> dict:
    return _digits_run(work / "train", "v2", "0.5")


def v3(work: Path) -> dict:
    return _digits_run(work / "v3", "v3-small", "1")


def transfer(work: Path) -> dict:
    report = Tr.transfer(work / "transfer", backend="numba")
    report["command"] = "mobilenet transfer --out DIR"
    return report


def embed(work: Path) -> dict:
    """The softmax pretraining (the transfer job's, when it ran in this work folder), a second
    phase with ArcFace from it, then ``mobilenet embed`` on the held-out glyph classes."""
    softmax = Tr.pretrain(dataclasses.replace(C.PRETRAIN, backend="numba"), work / "transfer" / "pretrain")
    arcface = Tr.pretrain(dataclasses.replace(C.ARCFACE, init=str(softmax)), work / "arcface")
    s = E.embed_glyphs(arcface, work / "embed", classifier=softmax)
    s["phases"] = {}
    for name, ckpt in (("softmax", softmax), ("arcface", arcface)):
        m = json.loads((ckpt.parent / "metrics.json").read_text())
        keep = ("epochs", "seconds", "test_accuracy")
        s["phases"][name] = {k: m[k] for k in keep} | {"config": m["config"]}
    s["command"] = (
        "mobilenet pretrain --out DIR; mobilenet pretrain --loss arcface --init DIR/checkpoint.npz "
        "--out DIR2; mobilenet embed --checkpoint DIR2/checkpoint.npz --classifier DIR/checkpoint.npz "
        "--out DIR3"
    )
    return s


DETECT_ARGS = ["detect", "train", "--data", "scenes", "--seed", "0"]
PREDICTED_SCENES = 8


def detect(work: Path) -> dict:
    """``mobilenet detect train`` with the documented defaults on numba, then on torch: each in
    its own process (two libraries' thread pools in one process starve each other on 2 cores)."""
    import subprocess
    import time

    from mobilenet.detection import predict as DP
    from mobilenet.detection import train as DT

    runs = {}
    for backend in ("numba", "torch"):
        out = work / f"detect-{backend}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "mobilenet.cli", *DETECT_ARGS, "--backend", backend, "--out", str(out)]
        subprocess.run(cmd, check=True)
        runs[backend] = json.loads((out / "metrics.json").read_text())
        runs[backend]["wall_seconds"] = time.perf_counter() - t0
    # the numba run's detections on the first held-out scenes, for docs/make_figures.py to draw
    runner, meta = DT.load_trained(work / "detect-numba" / "checkpoint.npz")
    test = DT.load_split(runner.cfg)[1].subset(range(PREDICTED_SCENES))
    found = DP.detect_images(runner, meta, test.x)
    keep = [scores >= 0.1 for _, scores, _ in found]  # what a figure at min_score >= 0.1 can show
    predictions = {
        "scenes": PREDICTED_SCENES,
        "scene_seed": int(DT.SCENE_SEEDS[1]),
        "resolution": runner.cfg.resolution,
        "classes": meta["classes"],
        "found": [
            {"boxes": b[k].tolist(), "scores": s[k].tolist(), "labels": lab[k].tolist()}
            for (b, s, lab), k in zip(found, keep)
        ],
    }
    return {
        "command": "mobilenet " + " ".join(DETECT_ARGS) + " --backend BACKEND --out DIR",
        "runs": runs,
        "predictions": predictions,
    }


ABLATION_SEEDS = (0, 1, 2)


ABLATION_VARIANTS = {  # name: v2_spec's keywords (the V2 paper's Figure 6a and 6b)
    "linear bottleneck, shortcut between bottlenecks (V2)": {},
    "ReLU6 after the projection": {"linear_bottleneck": False},
    "shortcut between expansions": {"shortcut": "expansion"},
    "no shortcut": {"shortcut": "none"},
}


def ablation(work: Path) -> dict:
    """The V2 paper's Figure 6 on digits: linear bottlenecks against ReLU6 after the projection
    (6a) and where the shortcut goes (6b); MobileNetV2-0.5 at 32 px, ``train``'s settings but
    10 epochs, three seeds each."""
    base = TrainConfig(arch="v2", width_mult=0.5, resolution=32, backend="numba", epochs=10)
    train_set, test = load_split(base)
    out = {"config": base.to_dict(), "seeds": list(ABLATION_SEEDS), "variants": ABLATION_VARIANTS, "runs": {}}
    for name, spec_kwargs in ABLATION_VARIANTS.items():
        accs, seconds = [], []
        for seed in ABLATION_SEEDS:
            cfg = dataclasses.replace(base, seed=seed)
            model = numpy_impl.mobilenet(
                "v2",
                backend="numba",
                seed=seed,
                width_mult=cfg.width_mult,
                num_classes=len(train_set.classes),
                dropout=cfg.dropout,
                **spec_kwargs,
            )
            runner = make_runner(cfg, len(train_set.classes), model=model)
            m = Trainer(Classification(cfg, train_set, test), runner, progress=True).fit()
            accs.append(m["test_accuracy"])
            seconds.append(m["seconds"])
        out["runs"][name] = accs
        out.setdefault("seconds", {})[name] = seconds
    return out


JOBS = {
    "overlay": overlay,
    "train": train,
    "transfer": transfer,
    "embed": embed,
    "v3": v3,
    "detect": detect,
    "ablation": ablation,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=list(JOBS), default=list(JOBS))
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = p.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="mobilenet-results-"))
    for name in args.only:
        print(f"== {name} ({work})", file=sys.stderr, flush=True)
        result = JOBS[name](work)
        result["machine"] = _machine()
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print("now run: python docs/make_figures.py", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
