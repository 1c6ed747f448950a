"""`tier-router monitor`: windows, EMF lines and drift on demo logs of real prompts."""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

import pytest
from realdata import require_shared

from serving.demo import DemoConfig, load_router, run_demo
from serving.metrics import Expectation, check_drift, windows
from serving.outcome_log import read_log
from tier_router.monitor_cli import register


def routellm_as_ladder(dst: Path, n: int = 160) -> Path:
    """Real routellm test prompts (MMLU, GSM8K) with their two models' real verdicts standing
    in for the routerbench ladder's keys: Mixtral for the cheap and middle tiers, GPT-4 for
    the top. A different prompt distribution from the one the bundle was trained on."""
    src = require_shared("routellm.jsonl.gz")
    rows = []
    with gzip.open(src, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            res = r["results"]
            mix, gpt4 = (
                res.get("mistralai/Mixtral-8x7B-Instruct-v0.1"),
                res.get("gpt-4-1106-preview"),
            )
            if r.get("split") == "test" and mix and gpt4:
                r["results"] = {
                    "claude-instant-v1": mix,
                    "gpt-3.5-turbo-1106": mix,
                    "gpt-4-1106-preview": gpt4,
                }
                rows.append(json.dumps(r) + "\n")
    step = max(1, len(rows) // n)
    dst.write_text("".join(rows[::step][:n]), encoding="utf-8")
    return dst


def demo_log(bundle: Path, outcomes: Path, log: Path, seed: int, n: int = 150) -> Path:
    cfg = DemoConfig(str(bundle), str(outcomes), str(log), requests=n, seed=seed)
    s = run_demo(cfg, load_router(str(bundle)), progress=io.StringIO())
    assert s["failed"] == 0 and s["log_records"] == s["requests"]
    return log


def monitor(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="tier-router")
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(["monitor", *argv])
    code = a.func(a)
    captured = capsys.readouterr()
    print(captured.out, captured.err)  # shown by pytest when a test fails
    return code, captured.out + captured.err


@pytest.mark.integration
def test_monitor_flags_drift_only_when_traffic_changes(
    trained_bundle: Path,
    small_outcomes: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = routellm_as_ladder(tmp_path / "routellm_as_rb.jsonl")
    same_a = demo_log(trained_bundle, small_outcomes, tmp_path / "a.jsonl", seed=0)
    same_b = demo_log(trained_bundle, small_outcomes, tmp_path / "b.jsonl", seed=1)
    drift_b = demo_log(trained_bundle, other, tmp_path / "c.jsonl", seed=0)

    emf = tmp_path / "emf.jsonl"
    args = ["--bundle", str(trained_bundle), "--window-requests", "150", "--emf", str(emf)]
    code, out = monitor(["--log", str(same_a), str(same_b), *args], capsys)
    assert code == 0 and "DRIFT" not in out and "no drift" in out, out
    lines = [json.loads(x) for x in emf.read_text().splitlines()]
    assert len(lines) == 2 * 4  # per window: one summary line and one per tier
    head = lines[0]
    assert head["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TierRouter"
    assert head["Requests"] == 150 and head["Drift"] == 0
    assert {x["Tier"] for x in lines[1:4]} == set(Expectation.from_bundle(trained_bundle).tiers)

    code, out = monitor(["--log", str(same_a), str(drift_b), *args], capsys)
    assert code == 1, out
    first, second = out.split("\n", 1)
    print(out)
    assert "DRIFT" not in first and "DRIFT" in second

    # The library view agrees: the drifted window is the second one.
    exp = Expectation.from_bundle(trained_bundle)
    recs = list(read_log([same_a, drift_b]))
    found = [check_drift(w, exp) for w in windows(recs, window_requests=150)]
    assert not found[0] and found[1]


def test_monitor_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    code, out = monitor(["--log", str(empty)], capsys)
    assert code == 2 and "no outcome records" in out
    (tmp_path / "b").mkdir()
    code, out = monitor(["--log", str(empty), "--bundle", str(tmp_path / "b")], capsys)
    assert code == 2 and "no held-out expectation" in out
    with pytest.raises(SystemExit) as e:
        monitor(["--log", str(tmp_path / "missing.jsonl")], capsys)
    assert e.value.code == 2


def test_monitor_calibrates_cascade_answers_only_with_their_grades(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cascade's accept/reject is a prediction; joined grades are the labels."""
    log, grades = tmp_path / "log.jsonl", tmp_path / "grades.jsonl"
    with log.open("w") as f, grades.open("w") as g:
        for i in range(40):
            f.write(json.dumps({
                "request_id": f"r{i}", "time": "2026-12-07T10:00:00.000+00:00",
                "decision": {"tier": "haiku", "tier_index": 0,
                             "p_pass": {"haiku": 0.8, "sonnet": 0.9, "opus": 0.95}},
                "attempts": [{"tier": "haiku", "model_id": "m0", "role": "decided",
                              "outcome": "passed"}],
                "cascade": {"point": "policy"}, "final_tier": "haiku",
            }) + "\n")  # fmt: skip
            g.write(json.dumps({"request_id": f"r{i}", "score": float(i % 4 != 0)}) + "\n")
    base = ["--log", str(log), "--window-requests", "40", "--json"]
    code, _ = monitor(base, capsys)
    assert code == 0
    code, out = monitor([*base, "--grades", str(grades)], capsys)
    assert code == 0
    doc, _ = json.JSONDecoder().raw_decode(out[out.rindex('{\n  "records"') :])
    cal = doc["windows"][0]["calibration"]["haiku"]
    assert cal["labels"] == 40 and cal["observed"] == pytest.approx(0.75)
    assert cal["verifier_judged"] == 0
