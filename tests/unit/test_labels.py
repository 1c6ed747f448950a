import math
from pathlib import Path

import numpy as np
import pytest

from outcomes import ModelResult, OutcomeRecord
from router.ladder import Ladder
from training.labels import build_labels, missing_tier_report

LADDER = Ladder.load(Path(__file__).resolve().parents[2] / "data/ladders/mmlu_pro.toml")
K = [t.outcomes_key for t in LADDER.tiers]


def rec(i: str, scores: dict[str, float], **extra: float) -> OutcomeRecord:
    return OutcomeRecord(
        i, f"prompt {i}", {k: ModelResult(v, output_chars=400) for k, v in scores.items()}
    )


def test_cheapest_pass_missing_and_none() -> None:
    recs = [
        rec("a", {K[0]: 1, K[1]: 1, K[2]: 1}),
        rec("b", {K[0]: 0, K[1]: 1, K[2]: 1}),
        rec("c", {K[0]: 0, K[1]: 0, K[2]: 0}),  # nobody passed
        rec("d", {K[1]: 0.7, "other-model": 1}),  # cheap and top missing
        rec("e", {"other-model": 0}),  # no tier result at all: dropped
    ]
    lab = build_labels(recs, LADDER)
    assert lab.ids == ["a", "b", "c", "d"] and lab.dropped == 1
    assert lab.cheapest_pass.tolist() == [0, 1, -1, 1]
    assert math.isnan(lab.passed[3, 0]) and lab.passed[3, 1] == 1.0
    assert lab.aux_models == ["other-model"] and lab.aux_scores[3, 0] == 1.0
    assert missing_tier_report(lab, LADDER) == {"haiku": 1, "sonnet": 0, "opus": 1}
    assert np.allclose(lab.output_tokens[0], 100.0)
    full = build_labels(recs, LADDER, min_tiers=3)
    assert full.ids == ["a", "b", "c"]


def test_inverse_propensity_weights_reach_the_model() -> None:
    """A label carrying ipw counts that many times in the cluster rates."""
    from training.featurize import Features
    from training.model import ModelConfig, SoftClusterModel

    recs = [rec("a", {K[0]: 1, K[1]: 1, K[2]: 1}), rec("b", {K[0]: 0, K[1]: 1, K[2]: 1})]
    recs[1].results[K[0]].extra["ipw"] = 3.0
    lab = build_labels(recs, LADDER)
    assert lab.weights is not None and lab.weights.tolist() == [[1, 1, 1], [3, 1, 1]]
    f = Features(np.ones((2, 4), np.float32) / 2, np.zeros((2, 1), np.float32), None)
    cfg = ModelConfig(n_clusters=(1,), prior_strengths=(0.0,), hand_weight=0.0)
    plain = SoftClusterModel(cfg).fit(f, lab.passed).predict_proba(f)[0, 0]
    weighted = SoftClusterModel(cfg).fit(f, lab.passed, lab.weights).predict_proba(f)[0, 0]
    assert plain == pytest.approx(0.5) and weighted == pytest.approx(0.25)


def test_a_recorded_zero_output_stays_zero_and_missing_gets_the_default() -> None:
    from training.evaluate import DEFAULT_OUTPUT_TOKENS, prompt_costs
    from training.labels import output_tokens_of

    r = OutcomeRecord("z", "x" * 40, {
        K[0]: ModelResult(1.0, output_tokens=0),  # an empty answer that passed
        K[1]: ModelResult(1.0, output_tokens=0, output_chars=80),
        K[2]: ModelResult(1.0),  # nothing recorded
    })  # fmt: skip
    assert output_tokens_of(r, K[0]) == 0.0 and output_tokens_of(r, K[1]) == 0.0
    assert output_tokens_of(r, K[2]) == DEFAULT_OUTPUT_TOKENS
    lab = build_labels([r], LADDER)
    assert lab.output_tokens[0].tolist() == [0.0, 0.0, DEFAULT_OUTPUT_TOKENS]
    c = prompt_costs(lab.prompts, np.array([[0.0, np.nan, 5.0]]), LADDER)[0]
    t = LADDER.tiers
    assert c[0] == pytest.approx(10 * t[0].price_in_per_mtok / 1e6)  # input only
    assert c[1] == pytest.approx(
        (10 * t[1].price_in_per_mtok + DEFAULT_OUTPUT_TOKENS * t[1].price_out_per_mtok) / 1e6)
    assert c[2] == pytest.approx((10 * t[2].price_in_per_mtok + 5 * t[2].price_out_per_mtok) / 1e6)
