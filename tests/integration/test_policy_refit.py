"""`tier-router policy`: thresholds refitted from the bundle equal what `train --goal`
fits on the same out-of-fold predictions; a new bundle version, atomically written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from realdata import LADDERS, require_shared, slice_outcomes

from router import Router
from router.bundle import Manifest, write_manifest
from tier_router.cli import main
from training.model import ModelConfig
from training.pipeline import TrainConfig, TrainResult, train

CFG = ModelConfig(n_clusters=(8, 24))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = require_shared("mmlu_pro.jsonl.gz")
    return slice_outcomes(src, tmp_path_factory.mktemp("d") / "mmlu.jsonl", 600, 100)


def _train(data: Path, out: Path, goal: str) -> TrainResult:
    return train(TrainConfig(data, LADDERS / "mmlu_pro.toml", out, model=CFG, folds=3, goal=goal))


@pytest.fixture(scope="module")
def top(data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _train(data, tmp_path_factory.mktemp("b") / "top", "top")


def test_policy_refit_equals_train_with_that_goal(
    top: TrainResult, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained = _train(data, tmp_path / "top2", "top-2")  # same seed: same folds, same OOF
    assert not np.array_equal(trained.policy.thresholds, top.policy.thresholds)
    out = tmp_path / "refit"
    assert main(["policy", "--bundle", str(top.bundle), "--goal", "top-2", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    printed = cap.err  # the table for people on stderr, one JSON document on stdout
    assert "top-2" in printed and "cost/mid" in printed and "wrote bundle" in printed
    doc = json.loads(cap.out)
    assert doc["bundle"] == str(out) and doc["goal"] == "top-2" and doc["elapsed_s"] >= 0
    r = Router.load(out)
    assert r.policy.thresholds == trained.policy.thresholds
    assert r.policy.goal == "top-2" and r.version != top.router_version
    m = Manifest.read(out)
    assert m.info["policy_refit_from"] == top.router_version and "policy_data.npy" in m.files
    assert Router.load(top.bundle).policy.thresholds == top.policy.thresholds  # untouched


def test_in_place_replaces_the_bundle(top: TrainResult, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(top.bundle, b)
    assert main(["policy", "--bundle", str(b), "--goal", "mid", "--in-place"]) == 0
    r = Router.load(b)
    assert r.policy.goal == "mid" and r.version != top.router_version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temp or old dirs left
    report = json.loads((b / "train_report.json").read_text())
    assert report["goal"] == "mid" and report["policy_refit_from"] == top.router_version


def test_bad_input_exits_2(
    top: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = str(top.bundle)
    assert main(["policy", "--bundle", b, "--goal", "fastest", "--out", str(tmp_path / "x")]) == 2
    assert "unknown tier 'fastest'" in capsys.readouterr().err
    assert main(["policy", "--bundle", b, "--goal", "top", "--out", b]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # neither --out nor --in-place
        main(["policy", "--bundle", b, "--goal", "top"])
    assert e.value.code == 2
    old = tmp_path / "old"
    shutil.copytree(top.bundle, old)
    (old / "policy_data.npy").unlink()
    write_manifest(old, "old", {})
    assert (
        main(["policy", "--bundle", str(old), "--goal", "top", "--out", str(tmp_path / "y")]) == 2
    )
    assert "keeps no policy_data.npy" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_decisions_explain_themselves(top: TrainResult) -> None:
    r = Router.load(top.bundle)
    names, th = r.ladder.names, r.policy.thresholds
    for text in ("What is 2 + 2?", top.labels.prompts[3]):
        d = r.route(text)
        p = list(d.p_pass.values())
        assert d.reason.startswith("policy: ")
        for i in range(min(d.tier_index + 1, len(th))):
            sign = ">=" if p[i] >= th[i] else "<"
            assert f"{names[i]} p={p[i]:.3f} {sign}" in d.reason
        assert d.to_dict()["reason"] == d.reason
    for empty in ("", " \n\t"):
        d = r.route(empty)
        assert d.tier in names and d.reason.startswith("empty or whitespace-only prompt")
