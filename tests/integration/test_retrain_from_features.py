"""Retraining from a default (features) log: the router's logged features stand in for the
prompt text, so the loop keeps working without text in the logs. The same served requests,
logged once with the text and once with features, retrain the same router."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from realdata import LADDERS

from outcomes import read_outcomes
from router import Router
from serving.demo import DemoConfig, load_router, run_demo
from tier_router.cli import main as cli

LADDER = LADDERS / "routerbench_subset.toml"
OTHER_DIGEST = "ab" * 32  # another featurizer's digest


@pytest.fixture(scope="module")
def logs(trained_bundle: Path, small_outcomes: Path, tmp_path_factory: Any) -> dict[str, Path]:
    """The same 150 train-split requests served twice by the demo: logged with the text
    (`store`, the opt-in) and with the default (`features`)."""
    d = tmp_path_factory.mktemp("features-logs")
    out = {}
    for storage in ("store", "features"):
        log = d / f"{storage}.jsonl"
        cfg = DemoConfig(str(trained_bundle), str(small_outcomes), str(log), split="train",
                         requests=150, seed=5, prompt_storage=storage)  # fmt: skip
        s = run_demo(cfg, load_router(str(trained_bundle)), progress=io.StringIO())
        assert s["log_records"] == 150 and s["failed"] == 0
        out[storage] = log
    return out


def _retrain(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    rc = cli(["retrain", *args])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out) if rc == 0 else None, cap.err


def test_the_features_log_has_the_same_labels_and_no_text(
    logs: dict[str, Path], small_outcomes: Path
) -> None:
    text = [json.loads(x) for x in logs["store"].read_text().splitlines()]
    feats = [json.loads(x) for x in logs["features"].read_text().splitlines()]
    raw = logs["features"].read_bytes()
    assert all(r["prompt"]["text"].encode() not in raw for r in text)
    assert [[(a["tier"], a["outcome"]) for a in r["attempts"]] for r in text] == [
        [(a["tier"], a["outcome"]) for a in r["attempts"]] for r in feats
    ]
    pairs = zip(text, feats, strict=True)
    assert all(len(r["prompt"]["text"]) == f["prompt"]["chars"] for r, f in pairs)


def test_retrain_from_features_matches_retrain_from_text(
    logs: dict[str, Path],
    small_outcomes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    docs, bundles = {}, {}
    for storage, log in logs.items():
        bundles[storage] = tmp_path / storage
        rc, doc, err = _retrain(["--outcomes", str(small_outcomes), "--log", str(log),
                                 "--ladder", str(LADDER), "--out", str(bundles[storage]),
                                 "--model", "", "--folds", "2", "--bootstrap", "0"],
                                capsys)  # fmt: skip
        assert rc == 0, err
        docs[storage] = doc
    fb_text, fb_feat = docs["store"]["feedback"], docs["features"]["feedback"]
    # The same labelled rows, one way from text and the other from the logged features.
    assert fb_feat["feedback_rows"] == fb_text["feedback_rows"] > 100
    assert fb_feat["conversion"]["skipped_prompt_features"] == 150  # not an outcomes file
    assert docs["features"]["merged_outcomes"] == str(small_outcomes)
    # Same labels, same features (bit for bit), same fit: the routers agree.
    prompts = [r.prompt for r in read_outcomes(small_outcomes, "test")]
    p_text = Router.load(bundles["store"]).p_pass_batch(prompts)
    p_feat = Router.load(bundles["features"]).p_pass_batch(prompts)
    assert np.abs(p_text - p_feat).max() < 1e-4
    m_text = docs["store"]["challenger"]["metrics"]
    m_feat = docs["features"]["challenger"]["metrics"]
    assert m_feat["pgr_auc"] == pytest.approx(m_text["pgr_auc"], abs=0.002)
    assert m_feat["pgr_auc"] > 0.5  # and it routes: better than random tier mixing


def test_another_featurizers_features_are_refused(
    logs: dict[str, Path],
    small_outcomes: Path,
    trained_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Features a router with another featurizer logged cannot share a fit with these."""
    other = tmp_path / "other.jsonl"
    with other.open("w") as f:
        for line in logs["features"].read_text().splitlines():
            r = json.loads(line)
            r["prompt"]["features"]["featurizer"] = OTHER_DIGEST
            f.write(json.dumps(r) + "\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc, _, err = _retrain(["--outcomes", str(small_outcomes), "--log", str(other), "--ladder",
                           str(LADDER), "--out", str(tmp_path / "b"), "--model", ""],
                          capsys)  # fmt: skip
    assert rc == 2
    assert f"made by featurizer {OTHER_DIGEST}" in err and "this retrain's featurizer" in err
    assert Router.load(trained_bundle).featurizer.digest in err
    assert "prompt_storage=store" in err and "table --bundle" in err
    pytest.importorskip("pyarrow")
    rc = cli(["table", "--log", str(other), "--ladder", str(LADDER), "--bundle",
              str(trained_bundle), "--out", str(tmp_path / "t.parquet")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and f"made by featurizer {OTHER_DIGEST}" in err, err


def test_feedback_skips_features_records_and_says_where_they_go(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fb.jsonl"
    rc = cli(["feedback", "--log", str(logs["features"]), "--ladder", str(LADDER),
              "--out", str(out)])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0
    doc = json.loads(cap.out)
    assert doc["written"] == 0 and doc["skipped_prompt_features"] == 150
    assert "retrain --log" in cap.err and "150 record(s)" in cap.err


def test_the_table_from_features_equals_the_table_from_text(
    logs: dict[str, Path], trained_bundle: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from training.scale_table import TableSpec, build_table

    spec = TableSpec.of(LADDER, trained_bundle)
    rows = {}
    for storage, log in logs.items():
        build_table([log], spec, tmp_path / f"{storage}.parquet")
        rows[storage] = pq.read_table(tmp_path / f"{storage}.parquet").to_pylist()
    assert len(rows["store"]) == len(rows["features"]) > 100
    for a, b in zip(rows["store"], rows["features"], strict=True):
        assert b["prompt"] is None and a["chars"] == b["chars"] == len(a["prompt"])
        for k in ("emb", "hand", "featurizer"):
            assert a[k] == b[k], k
        assert [x for x in a["scores"] if x == x] == [x for x in b["scores"] if x == x]


def test_a_cascade_bundle_retrained_from_features_keeps_its_cascade(
    cascade_train: Any,
    answers_slice: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A features log has no answer texts: the challenger's verifier and cascade policy are
    fitted on the base file's recorded answers, so a cascade bundle stays one."""
    log, grades = tmp_path / "log.jsonl", tmp_path / "grades.jsonl"
    cfg = DemoConfig(str(cascade_train.bundle), str(answers_slice), str(log), split="train",
                     requests=120, seed=2, grades_out=str(grades))  # fmt: skip
    run_demo(cfg, load_router(str(cascade_train.bundle)), progress=io.StringIO())
    assert b'"text"' not in log.read_bytes()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    ladder = LADDERS / "mmlu_pro_answers.toml"
    rc, doc, err = _retrain(["--outcomes", str(answers_slice), "--log", str(log), "--grades",
                             str(grades), "--ladder", str(ladder), "--out", str(tmp_path / "c"),
                             "--model", "", "--folds", "2", "--bootstrap", "0"],
                            capsys)  # fmt: skip
    assert rc == 0, err
    assert doc["feedback"]["feedback_rows"] > 60  # graded labels, from the features
    challenger = Router.load(tmp_path / "c")
    assert challenger.verifier is not None and challenger.cascade is not None
