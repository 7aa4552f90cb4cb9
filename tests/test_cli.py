"""The ``mobilenet`` command line."""

import json

import pytest

from mobilenet import cli, verify


def test_summary_json_reports_params_and_macs(capsys):
    assert cli.main(["summary", "--arch", "v1", "--width-mult", "0.5", "--resolution", "224", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert round(d["macs"] / 1e6) == 149 and round(d["params"] / 1e6, 1) == 1.3
    assert d["layers"][0]["name"] == "features.0.0" and d["layers"][0]["output_shape"] == [16, 112, 112]


def test_summary_table(capsys):
    assert cli.main(["summary", "--arch", "v2"]) == 0
    out = capsys.readouterr().out
    assert "3,504,872" in out and "300.8 M multiply-adds" in out and "features.18.0" in out


def test_summary_rejects_small_resolution(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["summary", "--resolution", "16"])
    assert e.value.code == 2
    assert "must be >= 32, got 16" in capsys.readouterr().err


def test_verify_passes_and_reports_json(capsys):
    args = ["verify", "--arch", "all", "--width-mult", "0.35", "--resolution", "32", "--json"]
    assert cli.main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and [r["arch"] for r in d["results"]] == ["v1", "v2", "v3-large", "v3-small"]
    assert all(r["param_grad"] <= 1e-9 for r in d["results"])


def test_verify_exits_non_zero_beyond_tolerance(monkeypatch, capsys):
    monkeypatch.setattr(verify, "FLOAT64_TOL", 1e-30)  # no real run is that exact
    assert cli.main(["verify", "--arch", "v2", "--width-mult", "0.35", "--resolution", "32"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "FAILED" in captured.err
