"""Routed batch serving end to end: real boto3 against the local Bedrock's batch job API,
S3 on a moto server, the bundle's cascade judging real recorded answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from loopback import MotoS3
from serving_support import REPO

from fake_bedrock import (
    FaultConfig,
    LocalBedrock,
    OutcomeIndex,
    recorded_grades,
    recorded_output_tokens,
)
from outcomes import OutcomeRecord, read_outcomes
from router import Router
from serving.batch_demo import run_batch_demo
from serving.batch_input import read_items
from serving.batch_run import BatchClients, BatchRunConfig, BatchRunner
from serving.batch_run_state import StateStore
from serving.batch_walk import Judge
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
from serving.cascade_run import find_cascade
from serving.checks import builtin_checks
from serving.demo import DemoConfig
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log
from serving.outcome_record import OutcomeLogRecord
from training.feedback import FeedbackStats, build_outcomes, iter_labelled
from training.log_labels import Grades
from training.replay import replay_records

ROLE = "arn:aws:iam::123456789012:role/batch-test"


@pytest.fixture(scope="module")
def cascade_router(cascade_train) -> Router:
    return Router.load(cascade_train.bundle)


@pytest.fixture(scope="module")
def test_records(cascade_router: Router, answers_slice: Path) -> list[OutcomeRecord]:
    ladder = cascade_router.ladder
    recs = read_outcomes(answers_slice, "test")
    # Answers that fit every max_tokens come back whole, as replay reads them.
    return [
        r
        for r in recs
        if all(
            recorded_output_tokens(r.results[t.outcomes_key]) <= t.max_tokens
            for t in (*ladder.tiers, ladder.second_opinion)
        )
    ][:60]


def _input(records: list[OutcomeRecord], path: Path) -> Path:
    path.write_text(
        "".join(json.dumps({"id": r.id, "prompt": r.prompt}) + "\n" for r in records),
        encoding="utf-8",
    )
    return path


def _control(url: str) -> Any:
    cfg = BedrockClientConfig(
        endpoint_url=url, dummy_credentials=True, max_attempts=10, retry_delay_scale=0.01
    )
    return make_bedrock_client(cfg, service="bedrock")


def test_batch_run_walks_as_on_demand_and_loses_nothing(
    cascade_router: Router, test_records: list[OutcomeRecord], moto: MotoS3, tmp_path: Path
) -> None:
    """Injected record failures, job failures and throttled creates: every record is
    answered once, each with the calls the on-demand cascade makes, in >= 2 rounds, at
    half the on-demand price; the state lives in S3; feedback reads the log."""
    ladder = cascade_router.ladder
    by_model = {t.model_id: t.outcomes_key for t in (*ladder.tiers, ladder.second_opinion)}
    by_name = {t.name: t.outcomes_key for t in (*ladder.tiers, ladder.second_opinion)}
    expected = {
        ln.id: ln for ln in replay_records(cascade_router, test_records) if ln.point == "policy"
    }
    inp = _input(test_records, tmp_path / "in.jsonl")
    items = read_items(inp)
    judge = Judge(ladder, find_cascade(cascade_router, "policy"), builtin_checks())
    faults = FaultConfig(error_rate=0.15, seed=4)
    log = tmp_path / "log.jsonl"
    with LocalBedrock(
        ladder, OutcomeIndex(test_records, ladder), faults, s3_endpoint_url=moto.url
    ) as server:
        server.batch.job_failure_rate = 0.15
        server.batch.create_throttle_rate = 0.3
        cfg = BatchRunConfig(
            bucket=moto.bucket,
            role_arn=ROLE,
            records_per_job=25,
            max_jobs_in_flight=2,
            poll_interval_s=0.05,
            max_record_retries=8,
            progress=False,
        )
        logger = OutcomeLogger([JsonlSink(log)])
        store = StateStore(f"s3://{moto.bucket}/state/run.json", moto.client())
        runner = BatchRunner(
            cfg, cascade_router, judge, BatchClients(_control(server.url), moto.client()), store
        )
        s = runner.run(inp, items, tmp_path / "out.jsonl", logger)
        logger.close()
        stats = dict(server.stats)
    n = len(test_records)
    assert s.records == n and s.failed == 0 and s.answered == n
    assert s.rounds >= 2 and s.record_failures > 0 and s.second_opinion_calls > 0
    assert stats["batch_jobs_created"] == s.jobs and stats["batch_create_throttled"] > 0
    assert s.cost_usd == pytest.approx(0.5 * s.on_demand_cost_usd)
    assert store.load() is not None and store.load().finished  # type: ignore[union-attr]
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(ln["id"] for ln in lines) == sorted(r.id for r in test_records)
    for ln in lines:
        want = expected[ln["id"]]
        assert [by_name[t] for t in ln["tiers"]] == want.calls, ln["id"]
        assert by_name[ln["tier"]] == want.final and isinstance(ln["answer"], str)
        assert len(ln["verdicts"]) == len(ln["tiers"]) and ln["cost_usd"] > 0
    records = list(read_log(log))
    assert sorted(r["request_id"] for r in records) == sorted(r.id for r in test_records)
    for r in records:
        want = expected[r["request_id"]]
        assert [by_model[a["model_id"]] for a in r["attempts"]] == want.calls
        assert r["cascade"]["point"] == "policy" and r["tags"]["mode"] == "batch"
        judged = [a for a in r["attempts"] if a["role"] != "second_opinion"]
        assert all(a["verifier"]["reason"].startswith("verifier p=") for a in judged)
    inputs = [r["modelInput"] for r in moto.records() if "modelInput" in r]
    assert {"schemaVersion" in b for b in inputs} == {True, False}  # Nova and Claude bodies
    # The log keeps the router's features of each prompt (the default), not its text.
    text_of = {it.id: it.text for it in items}
    raw = log.read_text(encoding="utf-8")
    assert not any(t[:80] in raw for t in text_of.values())
    for r in records:
        got = OutcomeLogRecord.from_dict(r).prompt_features
        want = cascade_router.prompt_features(text_of[r["request_id"]])
        assert got is not None and want is not None and got.digest == want.digest
        assert got.emb.tobytes() == want.emb.tobytes()
        assert got.hand.tobytes() == want.hand.tobytes()
    # Batch traffic feeds retraining as on-demand traffic does: the cascade's verdicts are
    # predictions, the grades of a downstream check (joined by request id) the labels.
    def labelled(grades: Grades) -> tuple[int, FeedbackStats]:
        st = FeedbackStats()
        return len(list(iter_labelled([log], ladder, "train", st, grades, features_ok=True))), st

    assert labelled(Grades())[0] == 0
    sent = {r.id: r for r in test_records}
    grades = Grades()
    for g in recorded_grades(read_log(log), sent, ladder):
        grades.add(g["request_id"], g["score"], g["tier"])
    rows, st = labelled(grades)
    assert rows == n and st.graded_labels >= n
    # An outcomes file holds prompt text: `feedback` counts these records out.
    fb = build_outcomes([log], ladder, tmp_path / "fb.jsonl", grades=grades)
    assert fb.written == 0 and fb.skipped_prompt_features == n


CLI = "from tier_router.cli import main; raise SystemExit(main())"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI, *args]


def test_killed_run_resumes_without_resubmitting(
    cascade_train, test_records: list[OutcomeRecord], moto: MotoS3, tmp_path: Path
) -> None:
    """`tier-router batch` is killed (SIGKILL) once the first round's jobs are submitted;
    the same command finishes the run: no job created twice, every record answered and
    logged once, no record sent twice to a model."""
    ladder = Router.load(cascade_train.bundle).ladder
    recs = test_records[:40]
    inp = _input(recs, tmp_path / "in.jsonl")
    out, log, state = tmp_path / "out.jsonl", tmp_path / "log.jsonl", tmp_path / "state.json"
    with LocalBedrock(
        ladder, OutcomeIndex(recs, ladder), s3_endpoint_url=moto.url, batch_start_delay_s=1.0
    ) as server:
        cmd = _cli(
            "batch", "--bundle", str(cascade_train.bundle), "--input", str(inp),
            "--out", str(out), "--log", str(log), "--state", str(state),
            "--bucket", moto.bucket, "--role-arn", ROLE, "--records-per-job", "15",
            "--poll-seconds", "0.05", "--endpoint-url", server.url,
            "--s3-endpoint-url", moto.url, "--dummy-credentials", "--no-progress",
        )  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        first: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if state.exists():
                jobs = json.loads(state.read_text())["jobs"]
                first = [j for j in jobs if j["round"] == 1]
                if first and all(j["arn"] for j in first):
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert first and all(not j["collected"] for j in first)  # killed mid-round
        creates_before = server.stats["batch_create_calls"]
        assert creates_before == len(first)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        stats = dict(server.stats)
    final = json.loads(state.read_text())
    assert final["finished"] and summary["rounds"] >= 2 and summary["failed"] == 0
    # The resumed run created only later rounds' jobs; round 1 kept its ARNs.
    later = [j for j in final["jobs"] if j["round"] > 1]
    assert stats["batch_create_calls"] - creates_before == len(later)
    assert stats["batch_jobs_created"] == len(final["jobs"])
    assert [j["arn"] for j in final["jobs"] if j["round"] == 1] == [j["arn"] for j in first]
    assert stats["batch_records"] == sum(len(j["rids"]) for j in final["jobs"])
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(r.id for r in recs)
    assert sorted(r["request_id"] for r in read_log(log)) == sorted(ids)


def test_malformed_input_stops_before_anything_is_submitted(
    cascade_train, tmp_path: Path, moto: MotoS3
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "prompt": "fine"}\n{"id": "b", "prompt": 3}\n')
    cmd = _cli(
        "batch", "--bundle", str(cascade_train.bundle), "--input", str(inp),
        "--out", str(tmp_path / "o.jsonl"), "--log", str(tmp_path / "l.jsonl"),
        "--bucket", moto.bucket, "--role-arn", ROLE, "--endpoint-url", "http://127.0.0.1:9",
        "--s3-endpoint-url", moto.url, "--dummy-credentials",
    )  # fmt: skip
    done = subprocess.run(
        cmd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"--input: {inp}:2: field 'prompt'" in done.stderr
    assert moto.records() == [] and not (tmp_path / "o.jsonl").exists()


def test_demo_batch_meets_the_bar(
    cascade_router: Router, answers_slice: Path, tmp_path: Path
) -> None:
    """demo --batch with a second opinion and injected record and job failures: nothing
    failed, every record logged, several rounds, <= 0.55 of the on-demand cost, quality
    within half a point of the on-demand cascade on the same records."""
    cfg = DemoConfig(
        bundle="unused",
        outcomes=str(answers_slice),
        log=str(tmp_path / "log.jsonl"),
        requests=120,
        error_rate=0.1,
        throttle_rate=0.2,
        seed=2,
        retry_delay_scale=0.01,
    )
    s = run_batch_demo(cfg, cascade_router, records_per_job=40)
    assert s["requests"] == 120 and s["failed"] == 0 and s["log_records"] == 120
    assert s["rounds"] >= 2 and s["jobs"] >= 4 and s["server_errors"] > 0
    assert s["second_opinion_calls"] > 0 and s["judged_by"] == "verifier"
    assert s["cost_usd"] <= 0.55 * s["on_demand_cost_usd"]
    assert s["quality"] >= s["on_demand_quality"] - 0.005
    assert len(list(read_log(cfg.log))) == 120


def test_without_a_cascade_the_checks_decide(ladder, moto: MotoS3, tmp_path: Path) -> None:
    """A router without a verifier (here a fixed one, as the fail-safe router is): the
    built-in checks judge, so an answer cut at max_tokens goes up a tier next round."""
    from outcomes import ModelResult
    from serving.routing import FixedTierRouter

    recs = [
        OutcomeRecord(
            f"q{i}",
            f"Question {i}: name a prime above {i}?",
            {
                t.outcomes_key: ModelResult(
                    1.0, output_tokens=5000 if i % 3 == 0 and j == 0 else 50
                )
                for j, t in enumerate(ladder.tiers)
            },
            "test",
        )
        for i in range(30)
    ]
    inp = _input(recs, tmp_path / "in.jsonl")
    router = FixedTierRouter(ladder, 0)
    judge = Judge(ladder, None, builtin_checks())
    log = tmp_path / "log.jsonl"
    with LocalBedrock(ladder, OutcomeIndex(recs, ladder), s3_endpoint_url=moto.url) as server:
        cfg = BatchRunConfig(
            bucket=moto.bucket, role_arn=ROLE, poll_interval_s=0.05, progress=False,
            tags={"team": "t"},
        )  # fmt: skip
        logger = OutcomeLogger([JsonlSink(log)])
        s = BatchRunner(
            cfg, router, judge, BatchClients(_control(server.url), moto.client()),
            StateStore(str(tmp_path / "state.json")),
        ).run(inp, read_items(inp), tmp_path / "out.jsonl", logger)  # fmt: skip
        logger.close()
    assert s.failed == 0 and s.rounds == 2 and s.final_tiers == {"haiku": 20, "sonnet": 10}
    assert s.always_top_cost_usd_est > s.cost_usd > 0
    for r in read_log(log):
        cut = int(r["request_id"][1:]) % 3 == 0
        assert [a["outcome"] for a in r["attempts"]] == (
            ["failed", "passed"] if cut else ["passed"]
        )
        assert r["tags"] == {"team": "t", "mode": "batch"} and r["cascade"] is None
        if cut:
            assert r["attempts"][0]["reason"] == "stop_reason:max_tokens"
