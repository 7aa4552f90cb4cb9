"""``mobilenet bench``: each backend alone in its process, a table and JSON (timings are never
asserted: only that they were taken the way the docs say)."""

import json

import pytest

from mobilenet import cli
from mobilenet.deploy import bench


def test_bench_cli_json_has_every_backend_and_fixed_threads(capsys):
    args = ["bench", "--width-mult", "0.25", "--resolution", "32", "--backends", "numpy,torch,onnxruntime"]
    assert cli.main([*args, "--rounds", "2", "--min-time", "0.01", "--threads", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["results"]) == {"numpy", "torch", "onnxruntime"} and res["threads"] == 1
    for per_case in res["results"].values():
        r = per_case["v2 0.25 32px b1 infer"]
        assert len(r["rounds_ms"]) == 2 and 0 < r["q1_ms"] <= r["ms"] <= r["q3_ms"] and r["peak_mb"] >= 0


def test_bench_table_says_what_it_skipped(capsys):
    args = ["bench", "--arch", "v1", "--width-mult", "0.25", "--resolution", "32", "--batch", "2", "--train"]
    assert cli.main([*args, "--backends", "numpy,onnxruntime", "--rounds", "1", "--min-time", "0.01"]) == 0
    out = capsys.readouterr().out
    assert (
        "| v1 0.25 32px b2 train | numpy |" in out
        and "onnxruntime: skipped (onnxruntime runs inference only)" in out
    )


def test_numba_worker_never_loads_torch(tmp_path):
    cases = json.dumps([{"arch": "v2", "width_mult": 0.25, "resolution": 32, "batch": 1, "train": False}])
    bench._run(["prepare", "--dir", str(tmp_path), "--cases", cases], threads=1)
    out = bench._run(
        [
            "worker",
            "--dir",
            str(tmp_path),
            "--backend",
            "numba",
            "--threads",
            "1",
            "--min-time",
            "0.01",
            "--cases",
            cases,
        ],
        threads=1,
    )
    assert "numba" in out["versions"] and "torch" not in out["versions"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backends", "numba,numba"], "distinct names"),
        (["--backends", "tensorflow"], "distinct names"),
        (["--batch", "0"], "must be >= 1"),
        (["--resolution", "8"], "must be >= 32"),
    ],
)
def test_bench_cli_refuses_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_bench_refuses_a_training_step_at_batch_one(capsys):
    assert cli.main(["bench", "--train", "--batch", "1"]) == 2
    assert "batch must be >= 2 for a training step" in capsys.readouterr().err
    with pytest.raises(ValueError, match="backends must be among"):
        bench.bench([bench.Case()], ["tf"])
