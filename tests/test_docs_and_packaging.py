"""The docs' generated tables are current; the torch-free packages import without torch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_doc_tables_are_up_to_date():
    r = subprocess.run(
        [sys.executable, "docs/make_figures.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_numpy_impl_and_kernels_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
        "import numpy as np, numpy_impl, kernels, mobilenet.summary\n"
        "m = numpy_impl.mobilenet_v2(width_mult=0.35, num_classes=3)\n"
        "print(m.eval().forward(np.zeros((1, 3, 32, 32), np.float32)).shape)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 3)"


def test_readme_python_examples_run():
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:  # later blocks use names from earlier ones
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["y"].shape == (4, 8, 48, 48)
    assert namespace["model"].grads["features.2.conv.1.0.weight"].shape == (48, 1, 3, 3)


def test_every_mutant_still_applies():
    """make mutants needs each mutant's snippet exactly once in its file; a kernel change that
    breaks one must update the list (tests/mutants.py) in the same commit."""
    from .mutants import MUTANTS, ROOT

    assert len({m.name for m in MUTANTS}) == len(MUTANTS) >= 25
    for m in MUTANTS:
        text = (ROOT / m.path).read_text()
        assert text.count(m.before) == 1, (
            f"mutant {m.name}: snippet found {text.count(m.before)} times in {m.path}"
        )
        assert m.before != m.after and all((ROOT / t).is_file() for t in m.tests), m.name
