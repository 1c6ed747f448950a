"""Our metrics must agree with the shared outside check (routeval) on real data."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from router.ladder import Ladder
from training.evaluate import (
    bootstrap_intervals,
    calibration_error,
    curve_metrics,
    knowable_costs,
    paired_difference,
)
from training.selection import fast_pgr_auc

LADDERS = Path(__file__).resolve().parents[2] / "data" / "ladders"


def _routeval(shared_data: Path):
    path = shared_data.parent / "tools" / "routeval.py"
    spec = importlib.util.spec_from_file_location("routeval", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["routeval"] = mod
    spec.loader.exec_module(mod)
    return mod


def _routerbench_test(shared_data: Path):
    """routeval, and the quality and cost of routerbench_subset's test split as it reads them."""
    rv = _routeval(shared_data)
    models, prices = rv.LADDERS["routerbench_subset"]
    t = rv.load(str(shared_data / "routerbench_subset.jsonl.gz"), models, prices)
    return rv, t.q[t.split], t.c[t.split]


def test_metrics_match_the_outside_check(shared_data: Path) -> None:
    rv, q, c = _routerbench_test(shared_data)
    rng = np.random.default_rng(0)
    for p in (
        rng.random(q.shape),
        (q >= 0.5) * 1.0,
        np.clip(q + rng.normal(0, 0.3, q.shape), 0, 1),
    ):
        ours = curve_metrics(p, q, c)
        theirs = rv.metrics(p, q, c)
        for k in ("pgr_auc", "cost_at_top", "cost_at_mid", "best_q"):
            assert abs(ours[k] - float(theirs[k])) < 1e-9, k


def test_knowable_cost_sweep_matches_the_outside_check(shared_data: Path) -> None:
    """The costs selection decides with are routeval's decision_costs, and the sweep that
    decides with them gives routeval's pgr_auc (not its leaky realized-cost one)."""
    rv = _routeval(shared_data)
    ladder = Ladder.load(LADDERS / "routerbench_subset.toml")
    models = [t.outcomes_key for t in ladder.tiers]
    prices = [(t.price_in_per_mtok, t.price_out_per_mtok) for t in ladder.tiers]
    t = rv.load(str(shared_data / "routerbench_subset.jsonl.gz"), models, prices)
    train = ~t.split
    ours = knowable_costs(
        t.c[train], [p for p, s in zip(t.prompts, train, strict=True) if s], ladder
    )
    assert np.allclose(ours, rv.decision_costs(t)[train], rtol=1e-9, atol=1e-15)
    assert not np.allclose(ours, t.c[train])  # the recorded output length is not in it
    rng = np.random.default_rng(1)
    q, c = t.q[train], t.c[train]
    p = np.clip(q + rng.normal(0, 0.4, q.shape), 0, 1)
    theirs = rv.metrics(p, q, c, ours)
    assert curve_metrics(p, q, c, ours)["pgr_auc"] == pytest.approx(theirs["pgr_auc"], abs=1e-9)
    assert fast_pgr_auc(p, q, c, ours) == pytest.approx(theirs["pgr_auc"], abs=1e-9)
    assert curve_metrics(p, q, c)["pgr_auc"] == pytest.approx(theirs["pgr_auc_true_cost"], abs=1e-9)


def test_oracle_beats_random_and_calibration_error() -> None:
    rng = np.random.default_rng(1)
    q = (rng.random((500, 3)) < [0.4, 0.6, 0.8]) * 1.0
    c = np.tile([1.0, 10.0, 50.0], (500, 1))
    assert curve_metrics(q, q, c)["pgr_auc"] > curve_metrics(rng.random(q.shape), q, c)["pgr_auc"]
    perfect = np.tile([0.4, 0.6, 0.8], (500, 1))
    ece = calibration_error(perfect, q)
    assert all(e < 0.06 for e in ece)
    assert calibration_error(1 - perfect, q)[2] > 0.5


def test_bootstrap_intervals_bracket_the_estimate_and_shrink_with_more_prompts(
    shared_data: Path,
) -> None:
    _, q, c = _routerbench_test(shared_data)
    rng = np.random.default_rng(2)
    p = np.clip(q + rng.normal(0, 0.4, q.shape), 0, 1)  # a router with real but weak signal
    point = curve_metrics(p, q, c)
    full = bootstrap_intervals(p, q, c, rounds=60, seed=5)
    assert full == bootstrap_intervals(p, q, c, rounds=60, seed=5)  # reproducible
    for k in ("pgr_auc", "cost_at_mid", "best_q"):
        assert full[k]["lo"] <= point[k] <= full[k]["hi"], k
    half = bootstrap_intervals(p[::4], q[::4], c[::4], rounds=60, seed=5)
    width = {k: v["hi"] - v["lo"] for k, v in full.items()}
    assert half["pgr_auc"]["hi"] - half["pgr_auc"]["lo"] > width["pgr_auc"] > 0
    narrow = bootstrap_intervals(p, q, c, rounds=60, level=0.5, seed=5)
    assert narrow["pgr_auc"]["hi"] - narrow["pgr_auc"]["lo"] < width["pgr_auc"]


@pytest.mark.parametrize(("rounds", "level"), [(0, 0.95), (10, 1.0), (10, 0.0)])
def test_bootstrap_intervals_refuse_bad_settings(rounds: int, level: float) -> None:
    q = np.array([[0.0, 1.0, 1.0]] * 8)
    with pytest.raises(ValueError, match="rounds"):
        bootstrap_intervals(np.ones_like(q), q, np.ones_like(q), rounds=rounds, level=level)


def test_paired_difference_is_tighter_than_either_interval_and_signed(shared_data: Path) -> None:
    _, q, c = _routerbench_test(shared_data)
    rng = np.random.default_rng(3)
    weak = np.clip(q + rng.normal(0, 0.5, q.shape), 0, 1)
    weaker = np.clip(weak + rng.normal(0, 0.05, q.shape), 0, 1)  # nearly the same router
    strong = np.clip(q + rng.normal(0, 0.2, q.shape), 0, 1)

    same = paired_difference(weak, weak, q, c, rounds=40)
    assert all(
        v == {"diff": 0.0, "lo": 0.0, "hi": 0.0} for k, v in same.items() if k != "cost_at_top"
    )

    close = paired_difference(weaker, weak, q, c, rounds=40, seed=1)
    own = bootstrap_intervals(weak, q, c, rounds=40, seed=1)["pgr_auc"]
    d = close["pgr_auc"]
    assert d["lo"] <= d["diff"] <= d["hi"]
    assert d["hi"] - d["lo"] < (own["hi"] - own["lo"]) / 2

    better = paired_difference(strong, weak, q, c, rounds=40)
    assert better["pgr_auc"]["lo"] > 0 and better["cost_at_mid"]["hi"] < 0
    assert paired_difference(weak, strong, q, c, rounds=40)["pgr_auc"]["hi"] < 0
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference(weak[:-1], weak, q[:-1], c[:-1])


def test_train_bootstrap_rounds_shrink_only_for_large_splits() -> None:
    from training.runs import bootstrap_rounds

    assert bootstrap_rounds(0) == bootstrap_rounds(2_400) == bootstrap_rounds(15_000) == 200
    assert bootstrap_rounds(50_000) == 60
    assert bootstrap_rounds(10_000_000) == 50
