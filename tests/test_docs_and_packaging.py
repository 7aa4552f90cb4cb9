"""The docs' generated tables are current; the torch-free packages import without torch; the
packages import downward only."""

import ast
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
        "import numpy as np, numpy_impl, kernels, mobilenet.summary, mobilenet.cli\n"
        "from mobilenet.train import TrainConfig, make_runner\n"  # a numba run's trainer never imports torch
        "r = make_runner(TrainConfig(backend='numba', width_mult=0.35), 3)\n"
        "print(r.predict(np.zeros((1, 3, 32, 32), np.float32)).shape)\n"
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


# each package and the first-party packages it must never import (at the top or inside a function)
LAYERS = {
    "mobilenet_arch": {"numpy_impl", "kernels", "torch_impl", "mobilenet"},
    "numpy_impl": {"kernels", "torch_impl", "mobilenet"},
    "kernels": {"torch_impl", "mobilenet"},
    "torch_impl": {"mobilenet"},
}


def _imported_packages(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_packages_import_downward_only():
    """The architecture spec at the bottom, the libraries above it, the application on top."""
    bad = []
    for package, forbidden in LAYERS.items():
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, package
        for f in files:
            for name in sorted(_imported_packages(f) & forbidden):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_import_check_sees_function_local_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import numpy as np\n\ndef g():\n    from mobilenet.train import TrainConfig\n    import kernels.depthwise\n"
    )
    assert _imported_packages(f) == {"numpy", "mobilenet", "kernels"}


def test_the_application_imports_its_own_modules_at_the_top():
    """No function-local import of a first-party package in mobilenet/ (third-party ones, such
    as matplotlib, may load late; backends and the verify command load torch by module name)."""
    first_party = {"mobilenet", "mobilenet_arch", "numpy_impl", "kernels", "torch_impl"}
    bad = []
    for f in sorted((ROOT / "mobilenet").glob("*.py")):
        tree = ast.parse(f.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                relative = isinstance(node, ast.ImportFrom) and node.level > 0
                if relative or (_imported_in(node) & first_party):
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno} in {fn.name}")
    assert not bad, "\n".join(bad)


def _imported_in(node):
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()
