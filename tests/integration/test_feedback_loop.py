"""The feedback loop on the shipped sample: three rounds of serve (real boto3 against the
local Bedrock server, cascade and its exploration on) -> log -> grade -> retrain.

The rounds' figures are checked as the benchmark reports them (benchmarks/feedback_loop.py
runs the same loop on the full answers file): nothing is lost, exploration is logged and
weighted, the last round's system is not worse than round 0's beyond noise, and the
verifier retrained from logs ranks answers within 0.03 AUC of one fitted on every label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.feedback_loop import LoopConfig, plot_loop, run_loop

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("loop")
    cfg = LoopConfig(
        answers=REPO / "data/sample/mmlu_pro_answers_sample.jsonl.gz",
        ladder=REPO / "data/ladders/mmlu_pro_answers.toml",
        work=work,
        rounds=3,
        folds=3,
        threads=4,
        bootstrap=500,
    )
    report = run_loop(cfg)
    report["png"] = plot_loop(report, work / "loop.png")
    return report


def test_every_round_serves_logs_and_grades_everything(loop: dict[str, Any]) -> None:
    rounds = loop["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    for r in rounds[1:]:
        s = r["served"]
        assert s["failed"] == 0 and s["logged"] == s["requests"] > 400
        assert s["grades"] >= s["requests"]  # every answered call has its grade
        assert s["explored"] > 0  # accepted answers' next tiers, at the logged rate
        # Labels on every tier, the upper ones from escalations and exploration.
        assert all(c["pass"] + c["fail"] > 0 for c in r["retrain"]["labels_per_tier"].values())
    fed = [r["retrain"]["feedback_rows"] for r in rounds[1:]]
    assert fed == sorted(fed) and fed[0] > 300  # the logs accumulate round by round


def test_the_retrained_system_is_not_worse_and_its_verifier_ranks_like_full_labels(
    loop: dict[str, Any],
) -> None:
    last = loop["rounds"][-1]
    q = last["vs_round0"]["quality"]
    assert q["lo"] <= q["mean"] <= q["hi"]
    assert q["hi"] >= 0, f"round 3 is worse than round 0 beyond noise: {q}"
    assert last["system"]["cost_usd"] < loop["always_top"]["cost_usd"]
    assert abs(loop["verifier_auc_gap"]) <= 0.03, loop["verifier_auc_gap"]
    assert loop["rounds"][0]["verifier_auc"]["mean"] > 0.5
    assert Path(loop["png"]).stat().st_size > 10_000
