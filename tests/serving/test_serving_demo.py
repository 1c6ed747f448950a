"""The offline demo end to end: a fixed-tier router here, the trained bundle when present."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from outcomes import ModelResult, OutcomeRecord, write_outcomes
from router.ladder import Ladder
from serving.demo import DemoConfig, load_router, run_demo
from serving.outcome_log import read_log
from serving.routing import FixedTierRouter
from tier_router.serving_cli import register


def synthetic(ladder: Ladder, path: Path, n: int = 120) -> Path:
    rng = random.Random(0)
    recs = []
    for i in range(n):
        hardness = rng.random()
        results = {
            t.outcomes_key: ModelResult(
                float(hardness < (0.5 + 0.2 * j)), output_chars=rng.randint(50, 2000)
            )
            for j, t in enumerate(ladder.tiers)
        }
        recs.append(OutcomeRecord(f"s{i}", f"Question {i}: {hardness:.5f}?", results, "test"))
    write_outcomes(path, recs)
    return path


def test_demo_with_faults_fails_nothing_and_logs_everything(ladder: Ladder, tmp_path: Path) -> None:
    outcomes = synthetic(ladder, tmp_path / "o.jsonl")
    cfg = DemoConfig(
        bundle="unused",
        outcomes=str(outcomes),
        log=str(tmp_path / "log.jsonl"),
        requests=100,
        throttle_rate=0.2,
        error_rate=0.05,
        seed=1,
    )
    s = run_demo(cfg, FixedTierRouter(ladder, 0))
    assert s["requests"] == 100 and s["failed"] == 0
    assert s["log_records"] == 100 and len(list(read_log(cfg.log))) == 100
    assert s["throttled"] > 0 and s["server_errors"] > 0
    assert s["cost_usd"] < s["always_top_cost_usd"]
    assert s["quality"] >= s["always_top_quality"]  # a perfect validator + escalation
    assert s["escalations"] > 0


@pytest.mark.integration
def test_demo_cli_with_trained_bundle(
    trained_bundle: Path,
    small_outcomes: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="tier-router")
    register(parser.add_subparsers(dest="command", required=True))
    log = tmp_path / "demo.jsonl"
    args = parser.parse_args(
        [
            "demo",
            "--bundle",
            str(trained_bundle),
            "--outcomes",
            str(small_outcomes),
            "--split",
            "test",
            "--requests",
            "80",
            "--throttle-rate",
            "0.2",
            "--error-rate",
            "0.05",
            "--log",
            str(log),
            "--seed",
            "3",
        ]
    )
    assert args.func(args) == 0
    captured = capsys.readouterr()
    s = json.loads(captured.out.strip().splitlines()[-1])
    assert {
        "requests",
        "failed",
        "escalations",
        "cost_usd",
        "always_top_cost_usd",
        "quality",
        "always_top_quality",
        "log",
    } <= set(s)
    assert s["requests"] == 80 and s["failed"] == 0
    assert len(list(read_log(log))) == 80
    assert s["cost_usd"] < s["always_top_cost_usd"]
    assert s["quality"] >= s["always_top_quality"] - 0.02
    assert "demo: 80/80" in captured.err


def test_the_summary_says_whether_the_bundle_goal_was_met(trained_bundle: Path) -> None:
    """saved_usd beside the cost ratio, and the goal read on the demo's own prompts: met or
    not, with a sentence on stderr when not (issue 23)."""
    from tier_router.serving_cli import goal_check, goal_note

    router = load_router(str(trained_bundle))  # trained with goal "mid" (of 3 tiers: sonnet)
    base = {"requests": 400, "always_quality": {"haiku": 0.5, "sonnet": 0.7, "opus": 0.8}}
    met = {**base, "quality": 0.71}
    met.update(goal_check(router, met))
    assert met["goal"] == "mid" and met["goal_quality"] == 0.7 and met["goal_met"] is True
    assert goal_note(met) is None
    missed = {**base, "quality": 0.685}
    missed.update(goal_check(router, missed))
    assert missed["goal_met"] is False and missed["goal_gap_points"] == -1.5
    note = goal_note(missed)
    assert note is not None and "goal 'mid' not met" in note and "-1.50 points" in note
