"""The cascade's configuration at its edges: ladder [second_opinion], cascade.json, and
outcomes files whose scores were removed (how a replay is judged)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outcomes import OutcomesError, read_outcomes
from router.cascade import CascadeFile, CascadePolicy, EscalationCost
from router.ladder import Ladder, LadderError

REPO = Path(__file__).resolve().parents[2]
TIER = (
    'name = "{n}"\nmodel_id = "m.{n}"\noutcomes_key = "k.{n}"\n'
    "price_in_per_mtok = 1\nprice_out_per_mtok = 2\n"
)


def _ladder(tmp_path: Path, extra: str) -> Path:
    body = "".join("[[tier]]\n" + TIER.format(n=n) for n in ("a", "b")) + extra
    p = tmp_path / "l.toml"
    p.write_text(body)
    return p


def test_second_opinion_loads_and_round_trips(tmp_path: Path) -> None:
    lad = Ladder.load(REPO / "data" / "ladders" / "mmlu_pro_answers.toml")
    assert lad.second_opinion is not None
    assert lad.second_opinion.outcomes_key == "gemini-1.5-flash-002"
    assert lad.second_opinion.name not in lad.names
    p = tmp_path / "again.toml"
    p.write_text(lad.to_toml())
    assert Ladder.load(p) == lad


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("[second_opinion]\n" + TIER.format(n="a"), "also a tier name"),
        ("[second_opinion]\nname = 'x'\n", "missing field"),
        ("[[second_opinion]]\n" + TIER.format(n="s"), "must be a table"),
        ("[extras]\nx = 1\n", "unknown table"),
    ],
)
def test_bad_second_opinion_names_the_problem(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(LadderError, match=needle):
        Ladder.load(_ladder(tmp_path, extra))


def _policy(**kw: object) -> CascadePolicy:
    base = dict(start=(0.5,), accept=(0.6,), consult=(0.3,), accept_second=(0.7,))
    return CascadePolicy(**{**base, **kw})  # type: ignore[arg-type]


def test_cascade_file_round_trips() -> None:
    cost = EscalationCost(((0.1, 0.9, 0.05),), ((3.0, 15.0), (15.0, 75.0)), (-5.0,))
    f = CascadeFile(_policy(), (_policy(label="p1", cost_weight=(0.2,)),), True, cost, "top-1")
    again = CascadeFile.from_json(f.to_json())
    assert again.policy == f.policy and again.points == f.points
    assert again.cost == cost and again.goal == "top-1" and again.second_opinion
    # A dearer predicted next tier lowers the bar to accept (z grows with the answer length).
    assert cost.z(1, 4000, 300) > cost.z(1, 100, 300)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"accept": (0.6, 0.7)}, "accept has 2 values"),
        ({"start": ()}, "at least two tiers"),
        ({"consult": (float("nan"),)}, "consult thresholds"),
        ({"accept": (1.5,)}, "accept thresholds"),
        ({"max_calls": 0}, "max_calls"),
        ({"max_calls": True}, "max_calls"),
    ],
)
def test_bad_cascade_policies_are_refused(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        _policy(**kw)


def test_cascade_json_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="kind = 'cascade'"):
        CascadeFile.from_json(json.dumps({"kind": "threshold"}))
    with pytest.raises(ValueError, match="escalation_cost"):
        CascadeFile.from_json(json.dumps({"kind": "cascade", "policy": _policy().to_dict()}))


def test_outcomes_without_scores_read_only_when_asked(tmp_path: Path) -> None:
    p = tmp_path / "o.jsonl"
    p.write_text(json.dumps({"id": "1", "prompt": "q", "results": {"m": {"answer": "A"}}}) + "\n")
    with pytest.raises(OutcomesError, match="'score'"):
        read_outcomes(p)
    (rec,) = read_outcomes(p, scores=False)
    assert rec.results["m"].extra["answer"] == "A"
    assert rec.results["m"].score != rec.results["m"].score  # NaN: unknown, not a fail
