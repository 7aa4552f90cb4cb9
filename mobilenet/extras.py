"""The optional dependencies (setup.cfg's extras) and the check that names a missing one before a
command does any work: ``pip install 'mobilenet-from-scratch[detect]'`` rather than a
ModuleNotFoundError three minutes into a run."""

from __future__ import annotations

import importlib.util

DISTRIBUTION = "mobilenet-from-scratch"
# the extras a command can need, as setup.cfg lists them (a test checks that they agree)
EXTRAS = {
    "torch": ("torch",),
    "plot": ("matplotlib",),
    "train": ("scikit-learn", "pillow", "tqdm", "matplotlib"),
    "detect": ("pillow", "matplotlib", "pycocotools", "tqdm"),
    "onnx": ("torch", "onnx", "onnxruntime"),
}
IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL"}  # where a package imports by another name


class MissingExtra(RuntimeError):
    """An optional dependency that a command needs is not installed."""


def missing(extra: str) -> list[str]:
    """The packages of ``extra`` that do not import here (found without importing them)."""
    if extra not in EXTRAS:
        raise ValueError(f"missing: extra must be one of {tuple(EXTRAS)}, got {extra!r}")
    out = []
    for package in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(IMPORT_NAMES.get(package, package)) is not None
        except (ImportError, ValueError):  # a broken or blocked installation
            found = False
        if not found:
            out.append(package)
    return out


def require(extra: str | None, what: str) -> None:
    """Raise :class:`MissingExtra` naming the ``pip install`` that brings ``extra``, when any of
    its packages is missing; ``what`` says what needs it."""
    if extra is None:
        return
    gone = missing(extra)
    if gone:
        raise MissingExtra(
            f"{what} needs {', '.join(gone)}, which {'is' if len(gone) == 1 else 'are'} not installed: "
            f"pip install '{DISTRIBUTION}[{extra}]'"
        )
