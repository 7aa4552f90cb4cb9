"""The docs' generated tables are current; the torch-free packages import without torch; the
packages import downward only."""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
        "from mobilenet.training.classify import TrainConfig, make_runner\n"  # a numba run's trainer never imports torch
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
    for f in sorted((ROOT / "mobilenet").rglob("*.py")):
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


def _make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BLOCK = re.compile(r"<!-- generated:(\w+) -->(.*?)<!-- /generated:\1 -->", re.S)


def test_the_docs_check_catches_an_edited_number():
    """Edit one digit inside each generated block that holds a number: the check must see it."""
    mf = _make_figures()
    checked = 0
    for md in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]:
        text = md.read_text()
        for m in BLOCK.finditer(text):
            digit = re.search(r"\d", m.group(2))
            if digit is None:
                continue
            at = m.start(2) + digit.start()
            edited = text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1 :]
            assert mf.render(edited) != edited, f"{md.name}: block {m.group(1)} does not notice an edit"
            checked += 1
    assert checked >= 25  # every chapter's tables, the performance chapter's included


# a time or a speed-up typed into prose goes stale: such numbers belong in generated blocks
MEASUREMENT = re.compile(
    r"\d+(\.\d+)?\s?(ms|us|µs|GB/s|GFLOP/s|s per step|seconds|minutes|min\b|x faster|x slower|% faster|% slower)"
)
NOT_MEASUREMENTS = {  # phrase: why it may stay
    "grouped in blocks of ~10 ms": "the timer's setting, not a result",
}


def test_docs_hold_no_hand_typed_measurement():
    found = []
    for md in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]:
        text = re.sub(r"```.*?```", "", BLOCK.sub("", md.read_text()), flags=re.S)
        for phrase in NOT_MEASUREMENTS:
            text = text.replace(phrase, "")
        found += [f"{md.name}: {m.group(0)!r}" for m in MEASUREMENT.finditer(text)]
    assert not found, f"hand-typed measurements (generate them instead): {found}"


def test_the_measurement_scan_sees_a_typed_time():
    assert MEASUREMENT.search("the whole model takes ~14 ms") and MEASUREMENT.search("about 1.2x faster")
    assert not MEASUREMENT.search("a 3x3 depthwise convolution, 1.4 width")


def test_code_excerpts_come_from_the_source_and_go_stale_with_it(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("excerpts", ROOT / "docs" / "excerpts.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    monkeypatch.setattr(ex, "ROOT", tmp_path)
    (tmp_path / "m.py").write_text(
        'class K:\n    @staticmethod\n    def f(x):\n        """Doc."""\n        return x + 1\n'
    )
    block = "<!-- excerpt:m.py:K.f nodoc -->\nold\n<!-- /excerpt -->"
    got = ex.render(f"before\n{block}\nafter")
    assert "@staticmethod\ndef f(x):\n    return x + 1\n```" in got and "Doc." not in got and "old" not in got
    assert ex.render(got) == got  # up to date: --check passes
    (tmp_path / "m.py").write_text("class K:\n    def f(x):\n        return x + 2\n")
    assert ex.render(got) != got  # the source changed: --check fails
    with pytest.raises(KeyError, match="no 'g'"):
        ex.render("<!-- excerpt:m.py:K.g -->\n<!-- /excerpt -->")
    n = sum(md.read_text().count("<!-- excerpt:") for md in (ROOT / "docs").glob("*.md"))
    assert n >= 5  # the chapters show their code


def test_every_figure_renders_without_overlapping_text(monkeypatch, tmp_path):
    """Each figure of docs/make_figures.py drawn as it is saved (not written): no two texts (labels,
    ticks as drawn, legends, titles) overlap, and no legend covers its axes' data."""
    import matplotlib.figure
    import matplotlib.pyplot as plt

    mf = _make_figures()
    dr = sys.modules["drawings"]  # beside make_figures, which imported it
    found, legends, current = {}, {}, []

    def check(fig, *args, **kwargs):  # a path or, for the atomic savers, a file object
        found[current[0]] = dr.overlapping_text(fig)
        legends[current[0]] = dr.legends_on_data(fig, drawn=True)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", check)
    for name, build in mf.FIGURES_BUILDERS.items():
        current[:] = [name]
        build(tmp_path / name)
    assert len(found) >= 36, sorted(found)  # a figure whose results file is missing is skipped
    assert not {k: v for k, v in found.items() if v}
    assert not {k: v for k, v in legends.items() if v}
    fig, ax = plt.subplots()  # and the check sees an overlap
    ax.tick_params(labelbottom=False, labelleft=False)  # only the two labels below count
    ax.text(0.5, 0.5, "one label")
    ax.text(0.52, 0.5, "another label")
    assert dr.overlapping_text(fig) == [("one label", "another label")]
    ax.plot([0.0, 0.5, 1.0], [0.0, 0.95, 0.0], label="a peak under the legend")
    ax.legend(loc="upper center")
    assert dr.legends_on_data(fig) == [("(untitled axes)", "a peak under the legend")]
    plt.close(fig)
