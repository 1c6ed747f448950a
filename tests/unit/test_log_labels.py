"""The labelling rules (training/log_labels.py): what a logged record says, with what weight.

Records are built as the client writes them (OutcomeLogRecord.from_dict of a line), on
the shipped ladder with a second opinion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.ladder import Ladder
from serving.outcome_record import EXPLORE_NEXT, OutcomeLogRecord
from training.log_labels import (
    GRADED,
    Grades,
    GradeStats,
    apply_rule,
    calibration_labels,
    labels_of,
    observed,
    parse_grade,
)

REPO = Path(__file__).resolve().parents[2]
LADDER = Ladder.load(REPO / "data/ladders/mmlu_pro_answers.toml")
T0, T1, T2 = LADDER.tiers
K0, K1, K2 = (t.outcomes_key for t in LADDER.tiers)


def attempt(tier: Any, role: str, outcome: str, kind: str, signal: str) -> dict[str, Any]:
    return {
        "tier": tier.name,
        "model_id": tier.model_id,
        "role": role,
        "outcome": outcome,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        "cost_usd": 0.001,
        "answer": {"storage": "store", "text": f"answer of {tier.name}"},
        "verdict": {"kind": kind, "signal": signal},
    }


def record(
    attempts: list[dict[str, Any]],
    *,
    cascade: bool = True,
    explore_rate: float = 0.0,
    propensity: float | None = None,
    final: str | None = None,
    rid: str = "r1",
) -> OutcomeLogRecord:
    d: dict[str, Any] = {
        "request_id": rid,
        "attempts": attempts,
        "prompt": {"storage": "store", "text": "What is 6 x 7?"},
        "final_tier": final or attempts[-1]["tier"],
        "ok": True,
    }
    if cascade:
        d["cascade"] = {"point": "policy", "calls": len(attempts), "judgements": []}
        if explore_rate:
            d["cascade"]["explore"] = {"rate": explore_rate, "explored": False}
    if propensity is not None:
        d["exploration"] = {"rate": 0.1, "explored": True, "propensity": propensity}
    return OutcomeLogRecord.from_dict(json.loads(json.dumps(d)))


ACCEPT0 = attempt(T0, "decided", "passed", "accepted", "verifier")
REJECT0 = attempt(T0, "decided", "rejected", "rejected", "verifier")
ACCEPT1 = attempt(T1, "escalation", "passed", "accepted", "verifier")
EXPLORED1 = attempt(T1, EXPLORE_NEXT, "passed", "unjudged", "exploration")


def test_cascade_verdicts_are_not_labels_but_grades_are() -> None:
    rec = record([REJECT0, ACCEPT1])
    lab = labels_of(rec, LADDER)
    assert lab.skipped == "no_labels" and lab.unlabelled == 2  # accept and reject: predictions
    grades = Grades({"r1": {T0.name: 0.0, None: 1.0}})  # a downstream check + the user's thumbs
    lab = labels_of(rec, LADDER, grades)
    assert {k: r.score for k, r in lab.results.items()} == {K0: 0.0, K1: 1.0}
    assert all(r.extra["label_source"] == GRADED for r in lab.results.values())
    assert lab.results[K0].extra["answer"] == "answer of haiku"  # the verifier trains on it
    # Calibration: only the decided attempt, and only with its grade.
    assert calibration_labels(rec) == []
    assert calibration_labels(rec, grades) == [(T0.name, 0)]


def test_check_failures_alone_are_no_labels_in_a_cascade() -> None:
    # A check failure kept without the passes the verifier then judged would over-count fails.
    failed = attempt(T0, "decided", "failed", "rejected", "explicit_check")
    assert labels_of(record([failed, ACCEPT1]), LADDER).skipped == "no_labels"
    plain = record([failed, attempt(T1, "escalation", "passed", "accepted", "explicit_check")],
                   cascade=False)  # fmt: skip
    got = labels_of(plain, LADDER)  # the ladder walk: its checks are the eval
    assert {k: r.score for k, r in got.results.items()} == {K0: 0.0, K1: 1.0}


def test_a_final_answer_grade_is_the_answer_the_caller_got() -> None:
    # Without a tier, the grade belongs to the final answer, not to an explored call after it.
    rec = record([ACCEPT0, EXPLORED1], explore_rate=0.05, final=T0.name)
    lab = labels_of(rec, LADDER, Grades({"r1": {None: 1.0}}))
    assert {k: r.score for k, r in lab.results.items()} == {K0: 1.0}


def test_first_attempt_rule_weights_the_next_tier_by_its_observation_probability() -> None:
    g = Grades({"r1": {T0.name: 1.0, T1.name: 1.0}})
    explored = record([ACCEPT0, EXPLORED1], explore_rate=0.05, propensity=0.5, final=T0.name)
    got, dropped = apply_rule(explored, labels_of(explored, LADDER, g).results, LADDER,
                              "first-attempt")  # fmt: skip
    assert dropped == 0
    assert got[K0].extra["ipw"] == pytest.approx(2.0)  # 1 / routing propensity
    assert got[K1].extra["ipw"] == pytest.approx(2.0 / 0.05)  # seen on 5% of accepted answers
    escalated = record([REJECT0, ACCEPT1], explore_rate=0.05)
    got, _ = apply_rule(escalated, labels_of(escalated, LADDER, g).results, LADDER, "first-attempt")
    assert got[K1].extra["ipw"] == pytest.approx(1.0)  # a rejection always escalates
    # Without cascade exploration an escalation's label is the hard prompts' only: dropped.
    no_explore = record([REJECT0, ACCEPT1])
    got, dropped = apply_rule(no_explore, labels_of(no_explore, LADDER, g).results, LADDER,
                              "first-attempt")  # fmt: skip
    assert list(got) == [K0] and dropped == 1
    got, dropped = apply_rule(no_explore, labels_of(no_explore, LADDER, g).results, LADDER,
                              "all-tried")  # fmt: skip
    assert set(got) == {K0, K1} and dropped == 0


def test_inverse_propensity_weights_recover_the_next_tier_pass_rate() -> None:
    """Simulated traffic: tier 1 passes more often where tier 0's answer is accepted (easy
    prompts). Escalation labels alone under-estimate tier 1; the weighted labels don't."""
    rng = np.random.default_rng(0)
    rate, n = 0.1, 20_000
    truth, plain, weighted, weights = [], [], [], []
    for i in range(n):
        accepted = rng.random() < 0.7
        p1 = 0.95 if accepted else 0.6
        y1 = float(rng.random() < p1)
        truth.append(y1)
        if accepted and rng.random() >= rate:
            continue  # tier 1 never seen
        first = ACCEPT0 if accepted else REJECT0
        nxt = EXPLORED1 if accepted else ACCEPT1
        rec = record([first, nxt], explore_rate=rate, rid=f"r{i}", final=first["tier"])
        out = observed(rec, LADDER, grades=Grades({f"r{i}": {T0.name: 1.0, T1.name: y1}}))
        assert out is not None
        r1 = out.results[K1]
        weighted.append(r1.score)
        weights.append(r1.extra["ipw"])
        if not accepted:
            plain.append(r1.score)
    true_rate = float(np.mean(truth))
    ipw_rate = float(np.average(weighted, weights=weights))
    assert abs(ipw_rate - true_rate) < 0.02
    assert true_rate - float(np.mean(plain)) > 0.2  # what escalations alone would learn


def test_grade_files_follow_the_log_rule(tmp_path: Path) -> None:
    f = tmp_path / "grades.jsonl"
    f.write_text(
        '{"request_id": "a", "score": 1}\n'
        '{"request_id": "a", "score": 0.0, "tier": "sonnet"}\n'
        '{"request_id": "b", "score": 1.5}\n'  # out of range: not a grade
        "not json\n"
        '{"request_id": "a", "score": 0.25}\n',  # a corrected grade replaces the first
        encoding="utf-8",
    )
    st = GradeStats()
    g = Grades.load([f], st)
    assert (st.grades, st.bad_grades, st.bad_lines) == (3, 1, 1)
    assert len(g) == 2
    assert parse_grade({"request_id": "x", "score": True}) == ("x", 1.0, None)
    assert parse_grade({"request_id": "", "score": 1}) is None
    assert parse_grade({"request_id": "x", "score": 1, "tier": 3}) is None
