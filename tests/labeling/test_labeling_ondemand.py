"""On-demand labeling end to end: real boto3 Converse calls against the local server,
answers from real mmlu_pro records, graded back to the recorded verdicts."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_labeling_support import (
    REPO,
    Lab,
    Records,
    judge_responder,
    read_jsonl,
    recorded_verdicts,
    run_cli,
)

from labeling.config import LabelConfig
from router.ladder import Ladder


def check_against_recorded(out: Path, recs: Records, ladder: Ladder) -> int:
    """Every graded result equals the recorded verdict where the recorded answer fits."""
    want = recorded_verdicts(recs, ladder)
    tiers = {t.outcomes_key: t for t in ladder.tiers}
    checked = 0
    for row in read_jsonl(out):
        for key, res in row["results"].items():
            assert res["grader"] == "choice" and res["mode"] in ("ondemand", "batch")
            factor = 0.5 if res["mode"] == "batch" else 1.0
            cost = tiers[key].cost_usd(res["input_tokens"], res["output_tokens"]) * factor
            assert res["cost_usd"] == pytest.approx(cost)
            if (row["id"], key) in want:
                assert res["score"] == want[(row["id"], key)], (row["id"], key, res)
                checked += 1
            else:
                assert res["stop_reason"] == "max_tokens" and res["score"] == 0.0
    return checked


def test_all_tiers_match_recorded_outcomes(lab: Lab) -> None:
    recs = lab.mmlu[:120]
    srv = lab.start_server(recs)
    out = lab.tmp / "out.jsonl"
    s = lab.ondemand(
        LabelConfig(lab.prompts(recs), out, concurrency=6, progress=False), lab.runtime(srv)
    )
    assert (s.status, s.labeled, s.calls, s.failed) == ("complete", 120, 360, 0)
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in recs)
    assert all(len(r["results"]) == 3 for r in rows)
    assert check_against_recorded(out, recs, lab.ladder) > 300
    assert s.model_cost_usd == pytest.approx(
        sum(res["cost_usd"] for r in rows for res in r["results"].values())
    )
    assert s.batch_cost_usd == pytest.approx(s.model_cost_usd / 2)


def test_cascade_stops_at_the_first_pass(lab: Lab) -> None:
    recs = lab.mmlu[:80]
    srv = lab.start_server(recs)
    out = lab.tmp / "out.jsonl"
    s = lab.ondemand(
        LabelConfig(lab.prompts(recs), out, "cascade", progress=False), lab.runtime(srv)
    )
    keys = [t.outcomes_key for t in lab.ladder.tiers]
    calls = 0
    for row in read_jsonl(out):
        tried = list(row["results"])
        assert tried == keys[: len(tried)]  # cheapest first, untried tiers missing
        scores = [row["results"][k]["score"] for k in tried]
        assert all(x < 0.5 for x in scores[:-1])
        assert scores[-1] >= 0.5 or len(tried) == 3
        calls += len(tried)
    assert s.calls == calls < 3 * len(recs)
    check_against_recorded(out, recs, lab.ladder)


CLI_RUNNER = (
    "import argparse, sys; sys.path.insert(0, {repo!r}); "
    "from tier_router.labeling_cli import register; "
    "p = argparse.ArgumentParser(); register(p.add_subparsers()); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def test_resume_after_a_killed_run(lab: Lab) -> None:
    """kill -9 mid-run, plus a torn last line; the re-run labels only what is missing.

    No clock: the first server stalls every call after the 60th (20 prompts x 3 tiers),
    so the run is always cut mid-way with calls in flight, and the re-run talks to a
    fresh server, so calls the dead process left in flight cannot be counted as its."""
    recs = lab.mmlu[:100]
    release = threading.Event()
    calls = itertools.count()

    def stall_after_60_calls(model_id: str, body: Any) -> None:
        if next(calls) >= 60:
            release.wait()
        return None  # then the recorded answer

    srv = lab.start_server(recs, responder=stall_after_60_calls)
    out = lab.tmp / "out.jsonl"
    argv = lab.label_argv(
        lab.prompts(recs), out, srv, "--grader", "choice", "--concurrency", "2", "--no-progress"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI_RUNNER.format(repo=str(REPO)), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # 18-20 prompts get written before the stall; wait for 15 (the deadline only
        # stops a broken run from hanging the suite).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or len(read_jsonl(out)) < 15):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before = {r["id"] for r in read_jsonl(out)}
        assert 15 <= len(done_before) <= 20
        with out.open("a") as f:
            f.write('{"id": "torn", "prompt": "half a li')  # the crash hit mid-write
        fresh = lab.start_server(recs)
        assert run_cli([fresh.url if a == srv.url else a for a in argv]) == 0
    finally:
        release.set()
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in recs)  # no dupes, no torn
    assert fresh.stats["answered"] == 3 * (100 - len(done_before))
    check_against_recorded(out, recs, lab.ladder)


def test_spend_cap_stops_cleanly_then_resumes(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    recs = lab.mmlu[:60]
    srv = lab.start_server(recs)
    out = lab.tmp / "out.jsonl"
    base = lab.label_argv(
        lab.prompts(recs), out, srv, "--grader", "choice", "--concurrency", "3", "--no-progress"
    )
    assert run_cli([*base, "--spend-cap", "0.25"]) == 3
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "spend_cap"
    assert "spend cap $0.25 reached" in captured.err and "--spend-cap" in captured.err
    rows = read_jsonl(out)  # every written line is whole
    assert 0 < len(rows) == summary["labeled"] < 60
    assert summary["cost_usd"] >= 0.25
    per_prompt = max(sum(r["cost_usd"] for r in row["results"].values()) for row in rows)
    assert summary["cost_usd"] < 0.25 + 3 * per_prompt  # only the in-flight prompts finish
    assert run_cli(base) == 0
    assert len(read_jsonl(out)) == 60


def test_throttling_is_retried_and_hard_failures_are_left_for_a_rerun(lab: Lab) -> None:
    recs = lab.mmlu[:40]
    srv = lab.start_server(recs)
    srv.faults = type(srv.faults)(throttle_rate=0.3, seed=1)
    prompts = lab.prompts(recs)
    out = lab.tmp / "out.jsonl"
    client = lab.runtime(srv, max_attempts=8)
    s = lab.ondemand(LabelConfig(prompts, out, progress=False), client)
    assert s.status == "complete" and srv.stats["throttled"] > 10 and len(read_jsonl(out)) == 40

    out2 = lab.tmp / "out2.jsonl"
    srv.faults = type(srv.faults)()
    srv.unavailable_models.add(lab.ladder.tiers[2].model_id)
    flaky = lab.runtime(srv, max_attempts=2)
    cfg = LabelConfig(prompts, out2, "cascade", progress=False)
    s = lab.ondemand(cfg, flaky)
    assert s.status == "failed" and s.exit_code == 1 and s.failed > 0
    assert "ServiceUnavailableException" in s.message and "re-run" in s.message
    assert len(read_jsonl(out2)) == 40 - s.failed  # prompts that needed opus are not written
    failed = s.failed
    srv.unavailable_models.clear()
    s = lab.ondemand(cfg, flaky)
    assert (s.status, s.labeled, s.already_done) == ("complete", failed, 40 - failed)
    assert len(read_jsonl(out2)) == 40


def test_judge_grader_costs_are_counted(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    recs = lab.mmlu[:12]
    srv = lab.start_server(recs, responder=judge_responder)
    out = lab.tmp / "out.jsonl"
    argv = lab.label_argv(
        lab.prompts(recs), out, srv, "--grader", "judge", "--judge-model", "sonnet", "--no-progress"
    )
    assert run_cli(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = read_jsonl(out)
    judged = [res for r in rows for res in r["results"].values()]
    assert all(res["grader"] == "judge" and res["grader_cost_usd"] > 0 for res in judged)
    assert summary["grader_cost_usd"] == pytest.approx(
        sum(r["grader_cost_usd"] for r in judged), abs=1e-6
    )
    assert summary["cost_usd"] == pytest.approx(
        summary["model_cost_usd"] + summary["grader_cost_usd"], abs=1e-6
    )
    # the scripted judge agrees with the letter grader, so the recorded verdicts come back
    want = {k: v for k, v in recorded_verdicts(recs, Ladder.load(lab.ladder_path)).items()}
    for r in rows:
        for key, res in r["results"].items():
            if (r["id"], key) in want:
                assert (res["score"] >= 0.5) == (want[(r["id"], key)] >= 0.5)


def test_cli_rejects_bad_input_before_any_call(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = lab.start_server([])
    prompts = lab.tmp / "p.jsonl"
    prompts.write_text(
        '{"id": "a", "prompt": "Pick one\\nA. x\\nB. y", "reference": "B"}\n'
        '{"id": "b", "prompt": "Pick one", "reference": 7}\n'
    )
    base = lab.label_argv(prompts, lab.tmp / "o.jsonl", srv)
    assert run_cli([*base, "--grader", "choice"]) == 2
    assert f"{prompts}:2: field 'reference': grader 'choice' needs" in capsys.readouterr().err
    assert srv.stats["requests"] == 0
    assert run_cli([*base, "--grader", "bleu"]) == 2
    assert "unknown grader 'bleu'" in capsys.readouterr().err
    assert run_cli([*base, "--grader", "choice", "--mode", "batch"]) == 2
    assert "--bucket and --role-arn" in capsys.readouterr().err
    assert run_cli([*base, "--grader", "judge", "--judge-model", "gpt"]) == 2
    assert "--judge-prices" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli([*base, "--grader", "choice", "--concurrency", "0"])
    assert "argument --concurrency" in capsys.readouterr().err
