from pathlib import Path

import numpy as np
import pytest

from router.ladder import Ladder
from router.policy import ThresholdPolicy
from training.policy_fit import fit_threshold, parse_goal

LADDER = Ladder.load(Path(__file__).resolve().parents[2] / "data/ladders/mmlu_pro.toml")


def test_policy_picks_cheapest_tier_over_threshold() -> None:
    pol = ThresholdPolicy((0.7, 0.6))
    p = np.array([[0.8, 0.9, 0.9], [0.5, 0.65, 0.9], [0.1, 0.2, 0.3]])
    assert pol.choose(p).tolist() == [0, 1, 2]
    assert [pol.choose_one(r) for r in p.tolist()] == [0, 1, 2]
    assert ThresholdPolicy.from_json(pol.to_json()) == pol
    with pytest.raises(ValueError):
        ThresholdPolicy((1.5,))


def test_goal_parsing() -> None:
    assert parse_goal("top", LADDER).tier_index == 2
    g = parse_goal("top-1.5", LADDER)
    assert (g.tier_index, g.points) == (2, 1.5)
    assert parse_goal("sonnet", LADDER).tier_index == 1
    assert parse_goal("mid-2", LADDER).tier_index == 1
    for bad in ("best", "top-x", "", "top-101"):
        with pytest.raises(ValueError, match="--goal"):
            parse_goal(bad, LADDER)


def test_fit_threshold_meets_goal_at_lowest_cost() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    easy = rng.random(n) < 0.5
    q = np.stack([easy * 1.0, easy * 1.0, np.ones(n)], axis=1)  # cheap passes easy prompts only
    c = np.tile([1.0, 5.0, 20.0], (n, 1))
    p = np.stack([np.where(easy, 0.9, 0.2), np.where(easy, 0.9, 0.3), np.full(n, 0.95)], axis=1)
    pol = fit_threshold(p, q, c, parse_goal("top", LADDER), LADDER)
    pick = pol.choose(p)
    assert q[np.arange(n), pick].mean() == 1.0
    assert (pick[easy] == 0).all() and (pick[~easy] == 2).all()
    assert pol.expected["goal_met_on_validation"]


def test_unreachable_goal_falls_back_to_top() -> None:
    q = np.array([[0.0, 0.0, 1.0]] * 10)
    c = np.tile([1.0, 2.0, 3.0], (10, 1))
    p = np.full((10, 3), 0.99)
    pol = fit_threshold(p, q, c, parse_goal("top", LADDER), LADDER)
    assert (pol.choose(p) == 2).all()
