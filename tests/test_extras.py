"""mobilenet.extras and the command line without an optional dependency: each command whose
extra is missing says so, naming the ``pip install`` that brings it, before it does any work."""

import configparser
import re
import sys
from pathlib import Path

import pytest

from mobilenet import cli, extras

ROOT = Path(__file__).resolve().parents[1]


def setup_extras() -> dict:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    section = cfg["options.extras_require"]
    return {
        k: tuple(re.split(r"[<>=!~\[; ]", line)[0] for line in section[k].split() if line) for k in section
    }


def test_the_extras_are_setup_cfgs():
    declared = setup_extras()
    for name, packages in extras.EXTRAS.items():
        assert set(packages) == set(declared[name]), name
    every_command_extra = {e for c in cli.COMMANDS.values() for e in c.extras}
    assert every_command_extra <= set(extras.EXTRAS)


def block(monkeypatch, *modules):
    """Make ``modules`` look uninstalled: their import fails and find_spec finds nothing."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_missing_names_the_blocked_packages(monkeypatch):
    assert extras.missing("train") == []
    block(monkeypatch, "sklearn", "PIL")
    assert extras.missing("train") == ["scikit-learn", "pillow"]
    with pytest.raises(extras.MissingExtra, match=r"needs scikit-learn, pillow, which are not installed: "):
        extras.require("train", "it")
    with pytest.raises(ValueError, match="extra must be one of"):
        extras.missing("gpu")


# each extra a command needs, with the module blocked and the command that needs it
CASES = [
    ("torch", "torch", ["verify", "--arch", "v2"]),
    ("torch", "torch", ["convert", "w.pth", "--out", "c.npz"]),
    ("torch", "torch", ["train", "--backend", "torch", "--out", "{out}"]),
    ("train", "sklearn", ["train", "--out", "{out}"]),
    ("train", "tqdm", ["pretrain", "--out", "{out}"]),
    ("train", "PIL", ["transfer", "--out", "{out}"]),
    ("detect", "pycocotools", ["detect", "train", "--out", "{out}"]),
    ("detect", "PIL", ["detect", "scenes", "--out", "{out}"]),
    ("onnx", "onnxruntime", ["export", "--onnx", "{out}/m.onnx"]),
    ("onnx", "onnx", ["verify", "--onnx", "{out}/m.onnx"]),
]


@pytest.mark.parametrize("extra, module, argv", CASES)
def test_a_command_names_its_missing_extra_before_any_work(
    monkeypatch, capsys, tmp_path, extra, module, argv
):
    out = tmp_path / "run"
    block(monkeypatch, module)
    code = cli.main([a.format(out=out) for a in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"pip install 'mobilenet-from-scratch[{extra}]'" in err and "Traceback" not in err
    assert not out.exists()  # nothing written: the check came first


def test_help_and_summary_need_no_extra(monkeypatch, capsys):
    block(monkeypatch, "torch", "onnxruntime", "sklearn", "PIL", "pycocotools", "tqdm", "matplotlib")
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "detect" in capsys.readouterr().out
    assert cli.main(["summary", "--arch", "v3-small"]) == 0
