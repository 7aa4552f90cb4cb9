"""Transfer learning and embeddings: the metrics against scikit-learn, the commands end to end."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from mobilenet import cli
from mobilenet.apps import embed as E
from mobilenet.apps import transfer as Tr
from mobilenet.cli import train as cli_train
from mobilenet.training import config as C


@given(seed=st.integers(0, 2**16), n=st.integers(2, 60), levels=st.sampled_from([3, 10, 1000]))
def test_roc_and_auc_match_scikit_learn(seed, n, levels):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    if same.all() or not same.any():
        same[0] = not same[0]
    scores = rng.integers(0, levels, n) / levels + 0.3 * same  # ties included
    fpr, tpr, thr = E.roc(scores, same)
    assert E.auc(fpr, tpr) == pytest.approx(roc_auc_score(same, scores), abs=1e-12)
    sk_fpr, sk_tpr, _ = roc_curve(same, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    assert np.all(np.diff(thr) < 0)


def test_roc_refuses_what_it_cannot_rank():
    with pytest.raises(ValueError, match="scores must be finite"):
        E.roc(np.array([0.2, np.nan, 0.1]), np.array([True, False, False]))
    with pytest.raises(ValueError, match="1-D of one length"):
        E.roc(np.zeros(3), np.zeros(2, bool))


def test_embedding_report_separates_clusters_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    centres = np.eye(4, 16) * 5
    clustered = E.l2_normalize(centres[y] + rng.standard_normal((120, 16)) * 0.3)
    r = E.embedding_report(clustered, y, enrol=3)
    assert r["identification_top1"] == 1.0 and r["auc"] > 0.999 and r["balanced_accuracy"] > 0.99
    assert r["probes"] == 120 - 12
    noise = E.l2_normalize(rng.standard_normal((120, 16)))
    r = E.embedding_report(noise, y, enrol=3)
    assert r["identification_top1"] < 0.5 and abs(r["auc"] - 0.5) < 0.1


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A glyph-pretrained checkpoint, as small and short as a test allows."""
    out = tmp_path_factory.mktemp("pretrain")
    args = ["pretrain", "--width-mult", "0.25", "--epochs", "1", "--train-limit", "128", "--out", str(out)]
    assert cli.main([*args, "--no-progress"]) == 0
    return out / "checkpoint.npz"


@pytest.fixture(scope="module")
def digits_0_4(tmp_path_factory):
    """A model trained on digits 0-4 only: the embedding tests' network."""
    out = tmp_path_factory.mktemp("digits")
    args = ["train", "--classes", "0,1,2,3,4", "--width-mult", "0.35", "--epochs", "1", "--out", str(out)]
    assert cli.main([*args, "--no-progress"]) == 0
    return out / "checkpoint.npz"


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory, pretrained):
    out = tmp_path_factory.mktemp("transfer")
    args = ["transfer", "--pretrained", str(pretrained), "--shots", "1", "--seeds", "0,3", "--steps", "2"]
    assert cli.main([*args, "--out", str(out), "--no-progress"]) == 0
    return out


def test_transfer_writes_table_json_and_plot(transfer_run, pretrained):
    from mobilenet.data import glyphs

    report = json.loads((transfer_run / "transfer.json").read_text())
    keys = [(r["target"], r["k"], r["seed"], r["method"]) for r in report["rows"]]
    expected = [(t, k, s, m) for t in ("digits", "glyphs") for k in (1,) for s in (0, 3) for m in Tr.METHODS]
    assert keys == expected
    n_held = len(glyphs.load_corpus().heldout)
    for r in report["rows"]:  # every image not picked for training is a test image
        total, n = (1797, 10) if r["target"] == "digits" else (100 * n_held, n_held)
        assert (
            r["classes"] == n and r["train_images"] == r["k"] * n and r["test_images"] == total - r["k"] * n
        )
        assert 0 <= r["test_accuracy"] <= 1 and r["steps"] >= 2
    for s in report["summary"]:
        group = (s["target"], s["k"], s["method"])
        accs = [r["test_accuracy"] for r in report["rows"] if (r["target"], r["k"], r["method"]) == group]
        assert s["runs"] == 2 and s["mean"] == pytest.approx(np.mean(accs))
        assert s["std"] == pytest.approx(np.std(accs))
    table = (transfer_run / "transfer.md").read_text()
    assert "| linear probe (frozen backbone, BN in eval) |" in table and "the held-out glyph classes" in table
    assert (transfer_run / "transfer.png").stat().st_size > 5000
    assert report["pretrained"] == str(pretrained)


def test_embed_reports_three_embeddings(digits_0_4, tmp_path, capsys):
    ck = str(digits_0_4)
    assert cli.main(["embed", "--checkpoint", ck, "--out", str(tmp_path), "--json", "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["unseen_classes"] == [5, 6, 7, 8, 9] and s["images"] == 896
    assert set(s["results"]) == {"trained network", "random network", "raw pixels"}
    for r in s["results"].values():
        assert 0 <= r["identification_top1"] <= 1 and 0 <= r["auc"] <= 1 and r["probes"] == 896 - 25
    assert (tmp_path / "embed.png").stat().st_size > 5000
    assert "| raw pixels |" in (tmp_path / "embed.md").read_text()
    assert [b["stage"] for b in s["by_stage"]] == list(range(19)) and s["by_stage"][-1]["channels"] == 1280
    last = s["by_stage"][-1]  # the last stage is the penultimate embedding of the main table
    assert last["top1"] == s["results"]["trained network"]["identification_top1"]


def test_stage_features_agree_between_numpy_and_torch():
    from mobilenet.training.classify import make_runner
    from mobilenet.training.config import TrainConfig

    cfg = TrainConfig(width_mult=0.35, backend="numpy", dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32))
    a = make_runner(cfg, 10).features(x, every_stage=True)
    b = make_runner(TrainConfig(width_mult=0.35, backend="torch", dtype="float64"), 10).features(
        x, every_stage=True
    )
    assert len(a) == len(b) == 19
    for i, (p, q) in enumerate(zip(a, b)):  # eval-mode BN: well conditioned, float64 rounding only
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12, err_msg=f"stage {i}")
    np.testing.assert_array_equal(make_runner(cfg, 10).features(x), a[-1])


def test_transfer_and_embed_reject_wrong_checkpoints(pretrained, digits_0_4, tmp_path, capsys):
    assert cli.main(["transfer", "--pretrained", str(digits_0_4), "--out", str(tmp_path)]) == 2
    assert "must be trained on the whole glyph corpus" in capsys.readouterr().err
    args = ["embed", "--checkpoint", str(digits_0_4), "--classifier", str(pretrained), "--out", str(tmp_path)]
    assert cli.main(args) == 2
    assert "--classifier goes with a glyph-pretrained --checkpoint" in capsys.readouterr().err
    for bad in (["--targets", "cifar"], ["--seeds", "0,0"], ["--shots", "0"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["transfer", *bad, "--out", str(tmp_path)])
        assert e.value.code == 2


def test_embed_on_held_out_glyphs_compares_five_embeddings(pretrained, tmp_path, capsys):
    arc = tmp_path / "arc"
    args = ["pretrain", "--loss", "arcface", "--embed-dim", "16", "--width-mult", "0.25", "--epochs", "1"]
    assert cli.main([*args, "--train-limit", "128", "--out", str(arc), "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "embed"
    args = ["embed", "--checkpoint", str(arc / "checkpoint.npz"), "--classifier", str(pretrained)]
    assert cli.main([*args, "--draws", "2", "--out", str(out), "--json", "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    names = ["metric embedding (ArcFace)", "ArcFace network's pooled features", "classifier features"]
    names += ["random network", "raw pixels"]
    assert list(s["results"]) == names and s["held_out_classes"] >= 30
    for r in s["results"].values():
        assert 0 <= r["identification_top1"] <= 1 and 0 <= r["auc"] <= 1 and 0 <= r["tar_at_far_1e-2"] <= 1
        for key in E.SPREAD:  # the mean and spread of two draws of gallery and pairs
            assert len(r[f"{key}_draws"]) == 2 and r[key] == pytest.approx(np.mean(r[f"{key}_draws"]))
            assert r[f"{key}_std"] == pytest.approx(np.std(r[f"{key}_draws"]))
        assert len(set(r["identification_top1_draws"])) > 1 or r["identification_top1"] in (0, 1)
    assert (out / "embed.png").stat().st_size > 5000 and "| raw pixels |" in (out / "embed.md").read_text()
    bad = ["embed", "--checkpoint", str(arc / "checkpoint.npz"), "--classifier", str(arc / "checkpoint.npz")]
    assert cli.main([*bad, "--out", str(tmp_path / "x")]) == 2
    assert "--classifier must be a softmax checkpoint" in capsys.readouterr().err


def test_tar_at_far_reads_the_roc():
    fpr, tpr = np.array([0.0, 0.005, 0.01, 0.2, 1.0]), np.array([0.0, 0.4, 0.6, 0.9, 1.0])
    assert E.tar_at_far(fpr, tpr, 1e-2) == 0.6 and E.tar_at_far(fpr, tpr, 1e-3) == 0.0


def test_roc_on_grid_keeps_the_best_rate_at_each_far():
    rng = np.random.default_rng(0)
    same = rng.random(5000) < 0.1
    fpr, tpr, _ = E.roc(rng.random(5000) + same, same)
    g = E.roc_on_grid(fpr, tpr, n=50)
    assert len(g["fpr"]) == 50 and np.all(np.diff(g["tpr"]) >= 0)
    for far, t in zip(g["fpr"], g["tpr"]):
        assert t == E.tar_at_far(fpr, tpr, far)


def test_pretrain_defaults_follow_the_loss():
    def config(*extra):
        return cli_train.pretrain_config(cli.build_parser().parse_args(["pretrain", "--out", "x", *extra]))

    assert config() == C.PRETRAIN
    arc = config("--loss", "arcface", "--init", "ck.npz")
    assert arc == dataclasses.replace(C.ARCFACE, init="ck.npz")
    assert (arc.label_smoothing, arc.dropout) == (0.0, 0.0) and arc.epochs < C.PRETRAIN.epochs
    given = config("--loss", "arcface", "--epochs", "2", "--dropout", "0.1", "--embed-dim", "8")
    assert (given.epochs, given.dropout, given.embed_dim, given.label_smoothing) == (2, 0.1, 8, 0.0)
    assert config("--label-smoothing", "0").label_smoothing == 0.0 and config().label_smoothing > 0
