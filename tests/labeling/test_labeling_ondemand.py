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
    aws_for,
    judge_responder,
    read_jsonl,
    recorded_verdicts,
    run_cli,
    write_prompts,
)

from labeling.clients import runtime_client
from labeling.config import LabelConfig
from labeling.graders import ChoiceGrader, GraderSet
from labeling.ondemand import run_ondemand
from router.ladder import Ladder


def check_against_recorded(out: Path, recs: list[dict[str, Any]], ladder: Ladder) -> int:
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


def test_all_tiers_match_recorded_outcomes(
    tmp_path: Path, mmlu: list[dict[str, Any]], ladder: Ladder, start_server: Any, s3_url: str
) -> None:
    recs = mmlu[:120]
    srv = start_server(recs)
    prompts = write_prompts(tmp_path / "p.jsonl", recs)
    out = tmp_path / "out.jsonl"
    s = run_ondemand(
        LabelConfig(prompts, out, concurrency=6, progress=False),
        ladder,
        GraderSet(ChoiceGrader()),
        runtime_client(aws_for(srv, s3_url)),
    )
    assert (s.status, s.labeled, s.calls, s.failed) == ("complete", 120, 360, 0)
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in recs)
    assert all(len(r["results"]) == 3 for r in rows)
    assert check_against_recorded(out, recs, ladder) > 300
    assert s.model_cost_usd == pytest.approx(
        sum(res["cost_usd"] for r in rows for res in r["results"].values())
    )
    assert s.batch_cost_usd == pytest.approx(s.model_cost_usd / 2)


def test_cascade_stops_at_the_first_pass(
    tmp_path: Path, mmlu: list[dict[str, Any]], ladder: Ladder, start_server: Any, s3_url: str
) -> None:
    recs = mmlu[:80]
    srv = start_server(recs)
    out = tmp_path / "out.jsonl"
    s = run_ondemand(
        LabelConfig(write_prompts(tmp_path / "p.jsonl", recs), out, "cascade", progress=False),
        ladder,
        GraderSet(ChoiceGrader()),
        runtime_client(aws_for(srv, s3_url)),
    )
    keys = [t.outcomes_key for t in ladder.tiers]
    calls = 0
    for row in read_jsonl(out):
        tried = list(row["results"])
        assert tried == keys[: len(tried)]  # cheapest first, untried tiers missing
        scores = [row["results"][k]["score"] for k in tried]
        assert all(x < 0.5 for x in scores[:-1])
        assert scores[-1] >= 0.5 or len(tried) == 3
        calls += len(tried)
    assert s.calls == calls < 3 * len(recs)
    check_against_recorded(out, recs, ladder)


CLI_RUNNER = (
    "import argparse, sys; sys.path.insert(0, {repo!r}); "
    "from tier_router.labeling_cli import register; "
    "p = argparse.ArgumentParser(); register(p.add_subparsers()); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def test_resume_after_a_killed_run(
    tmp_path: Path,
    mmlu: list[dict[str, Any]],
    ladder_path: Path,
    ladder: Ladder,
    start_server: Any,
    s3_url: str,
) -> None:
    """kill -9 mid-run, plus a torn last line; the re-run labels only what is missing.

    No clock: the first server stalls every call after the 60th (20 prompts x 3 tiers),
    so the run is always cut mid-way with calls in flight, and the re-run talks to a
    fresh server, so calls the dead process left in flight cannot be counted as its."""
    recs = mmlu[:100]
    release = threading.Event()
    calls = itertools.count()

    def stall_after_60_calls(model_id: str, body: Any) -> None:
        if next(calls) >= 60:
            release.wait()
        return None  # then the recorded answer

    srv = start_server(recs, responder=stall_after_60_calls)
    prompts = write_prompts(tmp_path / "p.jsonl", recs)
    out = tmp_path / "out.jsonl"
    argv = [
        "label",
        "--prompts",
        str(prompts),
        "--tiers",
        str(ladder_path),
        "--out",
        str(out),
        "--grader",
        "choice",
        "--endpoint-url",
        srv.url,
        "--dummy-credentials",
        "--concurrency",
        "2",
        "--no-progress",
    ]
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
        fresh = start_server(recs)
        assert run_cli([fresh.url if a == srv.url else a for a in argv]) == 0
    finally:
        release.set()
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in recs)  # no dupes, no torn
    assert fresh.stats["answered"] == 3 * (100 - len(done_before))
    check_against_recorded(out, recs, ladder)


def test_spend_cap_stops_cleanly_then_resumes(
    tmp_path: Path,
    mmlu: list[dict[str, Any]],
    ladder_path: Path,
    start_server: Any,
    s3_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recs = mmlu[:60]
    srv = start_server(recs)
    prompts = write_prompts(tmp_path / "p.jsonl", recs)
    out = tmp_path / "out.jsonl"
    base = [
        "label",
        "--prompts",
        str(prompts),
        "--tiers",
        str(ladder_path),
        "--out",
        str(out),
        "--grader",
        "choice",
        "--endpoint-url",
        srv.url,
        "--dummy-credentials",
        "--concurrency",
        "3",
        "--no-progress",
    ]
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


def test_throttling_is_retried_and_hard_failures_are_left_for_a_rerun(
    tmp_path: Path, mmlu: list[dict[str, Any]], ladder: Ladder, start_server: Any, s3_url: str
) -> None:
    recs = mmlu[:40]
    srv = start_server(recs)
    srv.faults = type(srv.faults)(throttle_rate=0.3, seed=1)
    prompts = write_prompts(tmp_path / "p.jsonl", recs)
    out = tmp_path / "out.jsonl"
    client = runtime_client(aws_for(srv, s3_url, max_attempts=8))
    s = run_ondemand(
        LabelConfig(prompts, out, progress=False), ladder, GraderSet(ChoiceGrader()), client
    )
    assert s.status == "complete" and srv.stats["throttled"] > 10 and len(read_jsonl(out)) == 40

    out2 = tmp_path / "out2.jsonl"
    srv.faults = type(srv.faults)()
    srv.unavailable_models.add(ladder.tiers[2].model_id)
    flaky = runtime_client(aws_for(srv, s3_url, max_attempts=2))
    cfg = LabelConfig(prompts, out2, "cascade", progress=False)
    s = run_ondemand(cfg, ladder, GraderSet(ChoiceGrader()), flaky)
    assert s.status == "failed" and s.exit_code == 1 and s.failed > 0
    assert "ServiceUnavailableException" in s.message and "re-run" in s.message
    assert len(read_jsonl(out2)) == 40 - s.failed  # prompts that needed opus are not written
    failed = s.failed
    srv.unavailable_models.clear()
    s = run_ondemand(cfg, ladder, GraderSet(ChoiceGrader()), flaky)
    assert (s.status, s.labeled, s.already_done) == ("complete", failed, 40 - failed)
    assert len(read_jsonl(out2)) == 40


def test_judge_grader_costs_are_counted(
    tmp_path: Path,
    mmlu: list[dict[str, Any]],
    ladder_path: Path,
    start_server: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recs = mmlu[:12]
    srv = start_server(recs, responder=judge_responder)
    out = tmp_path / "out.jsonl"
    argv = [
        "label",
        "--prompts",
        str(write_prompts(tmp_path / "p.jsonl", recs)),
        "--tiers",
        str(ladder_path),
        "--out",
        str(out),
        "--grader",
        "judge",
        "--judge-model",
        "sonnet",
        "--endpoint-url",
        srv.url,
        "--dummy-credentials",
        "--no-progress",
    ]
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
    want = {k: v for k, v in recorded_verdicts(recs, Ladder.load(ladder_path)).items()}
    for r in rows:
        for key, res in r["results"].items():
            if (r["id"], key) in want:
                assert (res["score"] >= 0.5) == (want[(r["id"], key)] >= 0.5)


def test_cli_rejects_bad_input_before_any_call(
    tmp_path: Path, ladder_path: Path, start_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = start_server([])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"id": "a", "prompt": "Pick one\\nA. x\\nB. y", "reference": "B"}\n'
        '{"id": "b", "prompt": "Pick one", "reference": 7}\n'
    )
    base = [
        "label",
        "--prompts",
        str(prompts),
        "--tiers",
        str(ladder_path),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--endpoint-url",
        srv.url,
        "--dummy-credentials",
    ]
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
