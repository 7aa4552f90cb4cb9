"""The training chapter's data-parallel tables and figure.

Read by ``docs/make_figures.py``. Everything comes from ``benchmarks/results/distributed.json``
(``python -m benchmarks.distributed``): the measured jobs on this machine and the projection
computed from them.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from perf_figures import _md  # beside this file, as make_figures imports both

DOCS = Path(__file__).resolve().parent
RESULT = DOCS.parent / "benchmarks" / "results" / "distributed.json"
WHAT = {
    "digits": "MobileNetV2-0.5, 32 px, batch 32 (the default digits run)",
    "v2-224": "MobileNetV2-1.0, 224 px, batch 16",
}


def _load():
    if not RESULT.exists():
        return None
    return json.loads(RESULT.read_text())


def _missing() -> str:
    return "*(not measured yet: run `python -m benchmarks.distributed`)*"


def _machine(r) -> str:
    m = r["machine"]
    return (
        f"{m['cpu']} ({m['simd']}), {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']}, "
        f"Numba {m['numba']}, torch {m['torch']}"
    )


def dist_measured() -> str:
    """Steps per second of one process with two threads against two processes of one thread."""
    r = _load()
    if r is None:
        return _missing()
    rows = []
    for case, ways in r["rounds"].items():
        med = r["median_step_seconds"][case]
        for way, runs in ways.items():
            steps = sorted(x["step_seconds"] for x in runs)
            coll = [x["collective_seconds_per_step"] for x in runs if "collective_seconds_per_step" in x]
            calls = [x["collective_calls_per_step"] for x in runs if "collective_calls_per_step" in x]
            rows.append(
                [
                    WHAT.get(case, case),
                    way,
                    f"{1 / med[way]:.2f}",
                    f"{med[way] * 1e3:.0f} ({steps[0] * 1e3:.0f}-{steps[-1] * 1e3:.0f})",
                    f"{med[way] / med['1x2 whole']:.2f}x",
                    "" if not coll else f"{statistics.median(coll) * 1e3:.0f} ms in {calls[0]:.0f} calls",
                ]
            )
    head = [
        "case",
        "processes x threads, parts",
        "steps/s",
        "ms/step, median (range)",
        "vs 1x2 whole",
        "collectives",
    ]
    n = len(next(iter(next(iter(r["rounds"].values())).values())))
    return (
        _md(head, rows)
        + f"\n\nMedians of {n} rounds, the ways alternating, each job alone on the machine; "
        + f"collectives: rank 0's time waiting in them per step. {_machine(r)}.\n\n"
        + _measured_findings(r)
    )


def _measured_findings(r) -> str:
    """What the table says, in words written from its numbers."""
    med = r["median_step_seconds"]
    out = []
    for case, ways in med.items():
        two, one, parts = ways["2x1 parts"], ways["1x2 parts"], ways["1x2 whole"]
        waits = statistics.median(x["collective_seconds_per_step"] for x in r["rounds"][case]["2x1 parts"])
        faster = "slower" if two > one else "faster"
        cost = "cost" if one > parts else "saved"
        out.append(
            f"{WHAT.get(case, case)}: two processes of one thread were {faster} than one process of two "
            f"threads on the same parts ({two / one:.2f}x), rank 0 waiting in collectives for "
            f"{100 * waits / two:.0f}% of a step; taking the batch in parts {cost} the one-process run "
            f"{abs(one / parts - 1) * 100:.0f}% against the whole batch at once."
        )
    return "\n".join(f"- {line}" for line in out)


def dist_agreement() -> str:
    """The torch backend's two-process job against one process, step by step, beside the NumPy
    model against the torch model in one process."""
    r = _load()
    if r is None or "agreement" not in r:
        return "*(not measured yet: run `python -m benchmarks.distributed --only ddp`)*"
    rows = [
        [a["dtype"], str(a["steps"]), f"{a['ddp_vs_one']:.1e}", f"{a['numpy_vs_torch']:.1e}"]
        for a in r["agreement"]
    ]
    head = ["dtype", "steps", "torch, 2 processes vs 1", "NumPy model vs torch model, 1 process"]
    return _md(head, rows) + (
        "\n\nThe largest difference of any array (weights and batch-norm statistics), relative to "
        "the array's largest value where that is above 1; MobileNetV2-0.25 at 32 px, batch 16, dropout 0."
    )


SHOWN = (1, 100)  # this machine's compute, and a machine computing 100 times faster
KINDS = (
    ("ring_grads", "all-reduce, batch norm per machine"),
    ("ring", "all-reduce, synchronised batch norm"),
    ("gather", "ordered gather (same bits)"),
)


def _proj(r):
    return r.get("projection") if r else None


def dist_projection() -> str:
    """Projected scaling efficiency of N machines, from the measured compute and the gradient bytes."""
    r = _load()
    p = _proj(r)
    if p is None:
        return _missing()
    rows = []
    machines = sorted({x["machines"] for x in p["rows"]})
    for speedup in SHOWN:
        for gbit in (10, 100):
            sel = {x["machines"]: x for x in p["rows"] if x["speedup"] == speedup and x["gbit"] == gbit}
            for kind, name in KINDS:
                rows.append(
                    [f"{speedup}x", f"{gbit}", name]
                    + [f"{100 * sel[n][kind + '_efficiency']:.0f}%" for n in machines]
                )
    head = ["compute", "Gbit/s", "gradients by"] + [f"{n} machines" for n in machines]
    return (
        _md(head, rows)
        + f"\n\nCompute: {p['per_machine_batch']} images per machine and step at "
        + f"{p['image_seconds'] * 1e3:.0f} ms per image (this machine, 2 threads; 100x: a machine "
        + f"that computes a hundred times faster). Gradients: {p['gradient_bytes'] / 1e6:.1f} MB "
        + f"(MobileNetV2-1.0, float32); {p['bn_layers']} batch norms, synchronised twice a step where "
        + f"they are; {p['latency'] * 1e6:.0f} us per message hop. Nothing overlapped, as this loop runs "
        + "(DDP overlaps the gradients' all-reduce with the backward: it hides part of their time, "
        + "not the batch norms' waits)."
        + "\n\n"
        + _projected_findings(p)
    )


def _projected_findings(p) -> str:
    last = max(x["machines"] for x in p["rows"])
    at = {(x["speedup"], x["gbit"]): x for x in p["rows"] if x["machines"] == last}
    lines = []
    for speedup in SHOWN:
        x = at[(speedup, 100)]
        eff = {kind: 100 * x[f"{kind}_efficiency"] for kind, _ in KINDS}
        first = max(eff, key=eff.get)
        where = "of this machine" if speedup == 1 else f"{speedup}x faster"
        lines.append(
            f"{last} machines at 100 Gbit/s, compute {where}: "
            + ", ".join(f"{name} {eff[kind]:.0f}%" for kind, name in KINDS)
            + f" (best: {dict(KINDS)[first]})."
        )
    return "\n".join(f"- {line}" for line in lines)


def fig_scaling(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = _load()
    p = _proj(r)
    speedups = SHOWN if p else ()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.3), sharey=True)
    for ax, speedup in zip(axes, speedups):
        for gbit, style in ((10, "--"), (100, "-")):
            sel = sorted(
                (x for x in p["rows"] if x["speedup"] == speedup and x["gbit"] == gbit),
                key=lambda x: x["machines"],
            )
            n = [x["machines"] for x in sel]
            for (kind, name), color, marker in zip(KINDS, ("C2", "C0", "C3"), "^os"):
                eff = [100 * x[f"{kind}_efficiency"] for x in sel]
                ax.plot(n, eff, style, color=color, marker=marker, label=f"{name}, {gbit} Gbit/s")
        ax.set_xscale("log", base=2)
        ax.set_xticks(n, [str(v) for v in n])
        ax.set(
            xlabel="machines", title=f"compute {'of this machine' if speedup == 1 else f'{speedup}x faster'}"
        )
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("scaling efficiency (%)")
    axes[0].set_ylim(0, 105)
    if p:  # below the panels, off the data
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(
        f"MobileNetV2-1.0 at 224 px, projected: {p['per_machine_batch'] if p else ''} images "
        "per machine and step"
    )
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


TABLES = {
    "dist_measured": dist_measured,
    "dist_projection": dist_projection,
    "dist_agreement": dist_agreement,
}
FIGURES = {"dist_scaling.png": fig_scaling}
