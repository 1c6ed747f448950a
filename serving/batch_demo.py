"""`tier-router demo --batch`: the routed batch path offline, end to end.

The same recorded prompts as `demo` go into a batch input file; the local Bedrock serves
the batch job API over S3 on a moto server (both in process) and answers as the
recorded models did. `--error-rate` fails that share of batch records and of jobs,
`--throttle-rate` throttles that share of CreateModelInvocationJob calls. The summary is
`demo`'s line plus `jobs`, `rounds`, `on_demand_cost_usd` (the same calls at the
on-demand price) and `on_demand_quality`: the on-demand cascade's walk on the same records
(every answer there, no failures), so the two paths can be compared.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from fake_bedrock import (
    FaultConfig,
    LocalBedrock,
    OutcomeIndex,
    recorded_grades,
    recorded_output_tokens,
    write_grades,
)
from fake_bedrock.batch import loopback_s3_client
from fake_bedrock.replay import recorded_reply
from router.cascade import Walk
from router.tokens import estimate_tokens
from serving.batch_input import read_items
from serving.batch_run import BatchClients, BatchRunConfig, BatchRunner, route_records
from serving.batch_run_state import Call, StateStore
from serving.batch_walk import Judge
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
from serving.cascade_run import find_cascade
from serving.checks import builtin_checks
from serving.demo import DemoConfig, demo_requests
from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage, ReadStats, read_log
from serving.routing import RouterLike

ROLE = "arn:aws:iam::123456789012:role/tier-router-batch-demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto() -> tuple[Any, str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise ValueError(
            "demo --batch needs moto's S3 server: pip install 'moto[server]' (the dev extra)"
        ) from None
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def run_batch_demo(
    cfg: DemoConfig,
    router: RouterLike,
    progress: TextIO | None = None,
    records_per_job: int = 100,
    max_jobs_in_flight: int = 4,
) -> dict[str, Any]:
    progress = progress if progress is not None else sys.stderr
    ladder = router.ladder
    chosen = demo_requests(cfg, ladder)
    index = OutcomeIndex(chosen, ladder)
    log = Path(cfg.log)
    work = Path(tempfile.mkdtemp(prefix="batch-", dir=log.parent))
    inp = work / "input.jsonl"
    with inp.open("w", encoding="utf-8") as f:
        for rec in chosen:
            f.write(json.dumps({"id": rec.id, "prompt": rec.prompt}, ensure_ascii=False) + "\n")
    items = read_items(inp)
    judge = Judge(ladder, find_cascade(router, "policy"), builtin_checks())
    started = time.monotonic()
    moto, s3_url = _start_moto()
    faults = FaultConfig(0.0, cfg.error_rate, cfg.latency_ms, cfg.seed)
    try:
        s3 = loopback_s3_client(s3_url)
        bucket = f"tier-router-demo-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        with LocalBedrock(ladder, index, faults, s3_endpoint_url=s3_url) as server:
            server.batch.create_throttle_rate = cfg.throttle_rate
            server.batch.job_failure_rate = cfg.error_rate
            bedrock = make_bedrock_client(
                BedrockClientConfig(
                    endpoint_url=server.url,
                    dummy_credentials=True,
                    max_attempts=max(cfg.max_attempts, 8),
                    retry_delay_scale=cfg.retry_delay_scale,
                ),
                service="bedrock",
            )
            run_cfg = BatchRunConfig(
                bucket=bucket,
                role_arn=ROLE,
                records_per_job=records_per_job,
                max_jobs_in_flight=max_jobs_in_flight,
                poll_interval_s=0.1,
                tags={"workload": "demo", "environment": "local"},
                prompt_storage=PromptStorage(cfg.prompt_storage),
            )
            logger = OutcomeLogger([JsonlSink(log)])
            runner = BatchRunner(
                run_cfg, router, judge, BatchClients(bedrock, s3),
                StateStore(str(work / "state.json")), progress,
            )  # fmt: skip
            summary = runner.run(inp, items, work / "answers.jsonl", logger)
            logger.close()
            stats = dict(server.stats)
    finally:
        moto.stop()
    # Quality of each record's final answer, and the on-demand cascade on the same records.
    top = ladder.tiers[-1]
    by_id = {r.id: r for r in chosen}
    quality = top_quality = od_quality = top_cost = top_batch_cost = 0.0
    with (work / "answers.jsonl").open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["tier"] is not None:
                key = ladder.tiers[ladder.index(d["tier"])].outcomes_key
                quality += by_id[d["id"]].results[key].score
    for item, rs in zip(items, route_records(router, judge, items), strict=True):
        rec = by_id[item.id]
        for t in (*ladder.tiers, *([ladder.second_opinion] if ladder.second_opinion else [])):
            reply = recorded_reply(index, rec.prompt, t, t.max_tokens)
            rs.calls[t.name] = Call(reply.text, reply.stop_reason, 0, 0, 0)
        walked = judge.advance(item, rs)
        assert isinstance(walked, Walk)
        if walked.final is not None:
            od_quality += rec.results[ladder.tiers[walked.final].outcomes_key].score
        top_result = rec.results[top.outcomes_key]
        top_out = min(recorded_output_tokens(top_result), top.max_tokens)
        top_cost += top.cost_usd(estimate_tokens(len(rec.prompt)), top_out)
        top_batch_cost += top.batch_cost_usd(estimate_tokens(len(rec.prompt)), top_out)
        top_quality += top_result.score
    n = len(chosen)
    logged = sum(1 for _ in read_log(log, ReadStats()))
    graded: dict[str, Any] = {}
    if cfg.grades_out is not None:
        sent = {r.id: r for r in chosen}
        got = recorded_grades(read_log(log, ReadStats()), sent, ladder)
        graded = {"grades": write_grades(Path(cfg.grades_out), got), "grades_out": cfg.grades_out}
    return {
        **graded,
        "requests": n,
        "failed": summary.failed,
        "escalations": summary.escalations,
        "cost_usd": round(summary.cost_usd, 6),
        "always_top_cost_usd": round(top_cost, 6),
        "quality": round(quality / n, 4),
        "always_top_quality": round(top_quality / n, 4),
        "log": str(log),
        "log_records": logged,
        "final_tiers": summary.final_tiers,
        "router_version": router.version,
        "judged_by": "verifier" if judge.cascade is not None else "checks",
        "cost_vs_top": round(summary.cost_usd / top_cost, 4) if top_cost else None,
        "bedrock_calls": stats.get("batch_records", 0),
        "throttled": stats.get("batch_create_throttled", 0),
        "server_errors": summary.record_failures,
        "seconds": round(time.monotonic() - started, 1),
        "mode": "batch",
        "jobs": summary.jobs,
        "rounds": summary.rounds,
        "on_demand_cost_usd": round(summary.on_demand_cost_usd, 6),
        "cost_vs_on_demand": summary.to_dict()["cost_vs_on_demand"],
        "always_top_batch_cost_usd": round(top_batch_cost, 6),
        "on_demand_quality": round(od_quality / n, 4),
        "second_opinion_calls": summary.second_opinion_calls,
        "jobs_failed": summary.jobs_failed,
        "answers": str(work / "answers.jsonl"),
    }
