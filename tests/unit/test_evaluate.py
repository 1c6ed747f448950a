"""Our metrics must agree with the shared outside check (routeval) on real data."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from training.evaluate import bootstrap_intervals, calibration_error, curve_metrics


def _routeval(shared_data: Path):
    path = shared_data.parent / "tools" / "routeval.py"
    spec = importlib.util.spec_from_file_location("routeval", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["routeval"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_metrics_match_the_outside_check(shared_data: Path) -> None:
    rv = _routeval(shared_data)
    models, prices = rv.LADDERS["routerbench_subset"]
    t = rv.load(str(shared_data / "routerbench_subset.jsonl.gz"), models, prices)
    q, c = t.q[t.split], t.c[t.split]
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
    rv = _routeval(shared_data)
    models, prices = rv.LADDERS["routerbench_subset"]
    t = rv.load(str(shared_data / "routerbench_subset.jsonl.gz"), models, prices)
    q, c = t.q[t.split], t.c[t.split]
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
