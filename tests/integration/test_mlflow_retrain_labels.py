"""Which logged labels retraining keeps: first verdict only, untried tiers unknown, IPW kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from outcomes import read_outcomes
from router.ladder import Ladder
from training.retrain import MergeStats, RetrainConfig, feedback_records, merge


def _attempt(ladder: Ladder, tier: str, outcome: str, role: str) -> dict[str, Any]:
    t = ladder.tiers[ladder.index(tier)]
    return {"tier": tier, "model_id": t.model_id, "role": role, "outcome": outcome,
            "reason": None if outcome == "passed" else "check", "usage": {
                "input_tokens": 50, "output_tokens": 20}, "cost_usd": 0.001}


def _record(rid: str, text: str, attempts: list[dict[str, Any]],
            exploration: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"schema": "tier-router.outcome/1", "request_id": rid, "attempts": attempts,
            "exploration": exploration, "prompt": {"storage": "store", "text": text}}


@pytest.fixture
def log_file(tmp_path: Path, small_ladder: Path) -> Path:
    ld = Ladder.load(small_ladder)
    recs = [
        # Explored one tier down (propensity 0.1): haiku failed, escalated to sonnet.
        _record("r1", "explain quantum tunnelling", [
            _attempt(ld, "haiku", "failed", "decided"),
            _attempt(ld, "sonnet", "passed", "escalation")],
            {"rate": 0.1, "explored": True, "propensity": 0.1, "decided_tier": "sonnet"}),
        # Haiku throttled, sonnet answered: a failover, so sonnet's verdict counts.
        _record("r2", "what is 2+2", [
            _attempt(ld, "haiku", "unavailable", "decided"),
            _attempt(ld, "sonnet", "passed", "failover")]),
        # Same request read twice (e.g. local file and S3 copy).
        _record("r2", "what is 2+2", [_attempt(ld, "haiku", "passed", "decided")]),
    ]
    p = tmp_path / "log.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


def test_first_attempt_rule_drops_escalations_and_keeps_propensity(
    log_file: Path, small_ladder: Path
) -> None:
    ld = Ladder.load(small_ladder)
    key = {t.name: t.outcomes_key for t in ld.tiers}
    st = MergeStats()
    rows = {r.prompt: r for r in feedback_records([log_file], ld, "first-attempt", set(), st)}
    r1 = rows["explain quantum tunnelling"]
    assert set(r1.results) == {key["haiku"]}  # the escalation's pass is not a label
    assert r1.results[key["haiku"]].score == 0.0
    assert r1.results[key["haiku"]].extra["ipw"] == pytest.approx(10.0)
    r2 = rows["what is 2+2"]
    assert set(r2.results) == {key["sonnet"]} and r2.results[key["sonnet"]].extra["ipw"] == 1.0
    assert st.dropped_escalation_labels == 1 and st.explored_rows == 1
    assert st.conversion["skipped_duplicate"] == 1
    assert st.labels_per_tier == {"haiku": {"pass": 0, "fail": 1},
                                  "sonnet": {"pass": 1, "fail": 0}}


def test_all_tried_keeps_every_verdict(log_file: Path, small_ladder: Path) -> None:
    ld = Ladder.load(small_ladder)
    st = MergeStats()
    rows = list(feedback_records([log_file], ld, "all-tried", set(), st))
    assert sorted(len(r.results) for r in rows) == [1, 2] and st.dropped_escalation_labels == 0


def test_merge_keeps_base_and_drops_held_out_prompts(
    log_file: Path, small_ladder: Path, small_outcomes: Path, tmp_path: Path
) -> None:
    test_prompt = read_outcomes(small_outcomes, split="test")[0].prompt
    ld = Ladder.load(small_ladder)
    leak = tmp_path / "leak.jsonl"
    leak.write_text(log_file.read_text() + json.dumps(_record(
        "r9", test_prompt, [_attempt(ld, "opus", "passed", "decided")])) + "\n")
    cfg = RetrainConfig(base=small_outcomes, feedback=(leak,), tiers=small_ladder,
                        out=tmp_path / "challenger")
    st = merge(cfg, tmp_path / "merged.jsonl.gz")
    merged = read_outcomes(tmp_path / "merged.jsonl.gz")
    assert st.base_rows == 900 and st.feedback_rows == 2 and st.dropped_eval_overlap == 1
    assert len(merged) == 902
    assert [r.split for r in merged if r.id.startswith("feedback-")] == ["train", "train"]
    with pytest.raises(ValueError, match="--label-rule"):
        RetrainConfig(base=small_outcomes, feedback=(leak,), tiers=small_ladder,
                      out=tmp_path / "x", label_rule="everything")


def test_no_usable_labels_names_the_cause_and_the_counts(
    small_outcomes: Path, small_ladder: Path, tmp_path: Path
) -> None:
    """Every logged prompt sits in the evaluation split: say so, with the counts."""
    ld = Ladder.load(small_ladder)
    held = [r.prompt for r in read_outcomes(small_outcomes, split="test")[:3]]
    log = tmp_path / "held_out.jsonl"
    log.write_text("".join(json.dumps(_record(
        f"h{i}", p, [_attempt(ld, "haiku", "passed", "decided")])) + "\n"
        for i, p in enumerate(held)))  # fmt: skip
    cfg = RetrainConfig(base=small_outcomes, feedback=(log,), tiers=small_ladder,
                        out=tmp_path / "challenger")
    with pytest.raises(ValueError) as e:
        merge(cfg, tmp_path / "merged.jsonl.gz")
    msg = str(e.value)
    assert "no usable labels" in msg and "3 records read" in msg
    assert "all 3 labelled records are prompts of the evaluation split 'test'" in msg
    assert "in_eval_split: 3" in msg


def test_retrain_without_clusters_trains_with_the_model_default(
    log_file: Path,
    small_outcomes: Path,
    small_ladder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tier_router.registry_cli import main as cli
    from training.model import ModelConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "challenger"
    rc = cli(["retrain", "--outcomes", str(small_outcomes), "--log", str(log_file),
              "--ladder", str(small_ladder), "--out", str(out), "--model", "", "--folds", "2",
              "--bootstrap", "0"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "train_report.json").read_text())
    assert report["model"]["n_clusters"] == ",".join(map(str, ModelConfig().n_clusters))
    assert json.loads(capsys.readouterr().out)["feedback"]["feedback_rows"] == 2


def test_a_rejected_first_answer_is_not_relabelled_with_the_escalation(
    tmp_path: Path, small_ladder: Path
) -> None:
    """The cascade rejected haiku's answer and sonnet's was accepted: the first judged tier
    is haiku, whose rejection is a prediction, not a label, so the first-attempt rule
    keeps no label for the prompt (never sonnet's, the escalation's bias)."""
    ld = Ladder.load(small_ladder)
    p = tmp_path / "log.jsonl"
    rec = _record("r9", "prove the lemma", [
        _attempt(ld, "haiku", "rejected", "decided"),
        _attempt(ld, "sonnet", "passed", "escalation")])
    p.write_text(json.dumps(rec) + "\n")
    st = MergeStats()
    assert list(feedback_records([p], ld, "first-attempt", set(), st)) == []
    assert st.dropped_by_label_rule == 1 and st.dropped_escalation_labels == 1
