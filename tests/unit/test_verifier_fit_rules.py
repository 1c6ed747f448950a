"""Rules of the verifier's fit that serving and the policy search must agree on."""

from __future__ import annotations

import numpy as np
import pytest

from router.cascade import CascadeFile, CascadePolicy, EscalationCost
from training.verifier_fit import _auc


def test_auc_ranks_ties_as_halves() -> None:
    y = np.array([1, 0] * 50)
    assert _auc(np.full(100, 0.3), y) == 0.5  # a constant score says nothing
    assert _auc(np.array([0.1, 0.2, 0.2, 0.9]), np.array([0, 1, 0, 1])) == 0.875
    assert _auc(np.arange(10.0), np.array([0] * 5 + [1] * 5)) == 1.0


def _file(n_tiers: int, points_tiers: int, second: bool) -> CascadeFile:
    def pol(n: int, label: str) -> CascadePolicy:
        k = n - 1
        return CascadePolicy((0.5,) * k, (0.5,) * k, (0.4,) * k, (0.5,) * k, label=label)

    cost = EscalationCost(
        coef=((0.0, 1.0, 0.0),) * (n_tiers - 1),
        prices=((1.0, 1.0),) * n_tiers,
        ref=(0.0,) * (n_tiers - 1),
    )
    return CascadeFile(pol(n_tiers, "policy"), (pol(points_tiers, "p1"),), second, cost)


def test_a_cascade_for_another_ladder_is_refused_whole() -> None:
    _file(3, 3, True).check(3, True)
    with pytest.raises(ValueError, match="operating point 'p1' has 2 tiers"):
        _file(3, 2, False).check(3, False)
    with pytest.raises(ValueError, match="second opinion"):
        _file(3, 3, True).check(3, False)
    with pytest.raises(ValueError, match="escalation_cost"):
        f = _file(3, 3, False)
        CascadeFile(f.policy, f.points, False, EscalationCost(f.cost.coef[:1], f.cost.prices,
                                                              f.cost.ref)).check(3, False)


def _answers(n: int, rng: np.random.Generator, second: bool):
    from router.answer_features import FEATURE_NAMES
    from router.verifier import ReadAnswer
    from training.recorded_answers import AnswerSet

    def read() -> ReadAnswer:
        unit = rng.normal(size=8)
        return ReadAnswer(
            tuple(rng.normal(size=len(FEATURE_NAMES))), None, unit / np.linalg.norm(unit)
        )

    reads = [[read(), read()] for _ in range(n)]
    seconds = [read() for _ in range(n)] if second else None
    return AnswerSet(reads, seconds, np.zeros(n))


def test_an_unfitted_context_scores_the_same_in_serving_and_in_the_policy_search() -> None:
    """Too few rows to fit: serving's sigmoid(bias) and the search's out-of-fold value are
    both the tier's pass rate (not 0.5 in one and NaN in the other)."""
    from router.verifier import CONTEXTS
    from training.verifier_fit import fit_verifier

    rng = np.random.default_rng(0)
    n = 15
    passed = np.array([[1.0, 1.0]] * 5 + [[0.0, 1.0]] * 10)
    fitted = fit_verifier(
        _answers(n, rng, True), np.full((n, 2), 0.5), passed, np.arange(n) % 3
    )
    for k in range(2):  # tier 0 alone and with the second opinion
        served = 1 / (1 + np.exp(-fitted.bias[0 * CONTEXTS + k]))
        assert np.allclose(fitted.oof[:, 0, k], 1 / 3) and abs(served - 1 / 3) < 1e-9


def test_where_the_answer_ranks_no_better_than_the_prompt_the_verifier_is_the_router() -> None:
    """Answer features that are noise: the context falls back to the router's P(pass),
    in the bundle's weights and the out-of-fold rows alike."""
    from router.verifier import CONTEXTS, HAND_FEATURES
    from training.verifier_fit import fit_verifier

    rng = np.random.default_rng(1)
    n = 400
    p = rng.uniform(0.05, 0.95, size=(n, 2))
    passed = (rng.uniform(size=(n, 2)) < p).astype(float)
    fitted = fit_verifier(_answers(n, rng, False), p, passed, np.arange(n) % 5)
    assert "0.alone" in fitted.fallback
    col = fitted.weights[:, 0 * CONTEXTS + 0]
    assert col[HAND_FEATURES] == 1.0 and np.count_nonzero(col) == 1
    assert np.allclose(fitted.oof[:, 0, 0], np.clip(p[:, 0], 1e-4, 1 - 1e-4))


def test_the_consult_grid_comes_from_the_contexts_consult_is_applied_in() -> None:
    """Consult is decided before the second opinion answers: its thresholds are quantiles
    of the answer-alone and with-the-tier-below probabilities, not the with-second ones."""
    from router.cascade import NEVER
    from router.verifier import WITH_PREV, WITH_SECOND
    from training.cascade_fit import search_grids
    from training.cascade_sim import CascadeData

    n = 200
    v = np.empty((n, 3, 4))
    v[:, :, 0] = np.linspace(0.0, 0.4, n)[:, None]  # alone
    v[:, :, WITH_PREV] = np.linspace(0.1, 0.5, n)[:, None]
    v[:, :, WITH_SECOND] = 0.95  # with the second opinion: never what consult sees
    v[:, :, WITH_SECOND + WITH_PREV] = 0.97
    ones = np.ones((n, 3))
    d = CascadeData(ones * 0.5, v, ones, ones, np.ones(n), True, np.zeros((n, 2)))
    for grid in search_grids(d)["consult"]:
        inner = [g for g in grid if 0.0 < g < NEVER]
        assert inner and max(inner) <= 0.5
    for grid in search_grids(d)["accept_second"]:
        assert min(g for g in grid if g > 0) >= 0.95
