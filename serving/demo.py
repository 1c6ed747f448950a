"""Offline end-to-end demo: router bundle -> tiered client -> local Bedrock -> outcome log.

Requests are real prompts from an outcomes file's split. The local server answers as
each tier's recorded model did (its real answer text where the file has one). A bundle
with a cascade judges those answers with its own verifier and second opinion, as in
production; a bundle without one gets a caller check that knows the recorded pass/fail
(a perfect validator). Quality is the recorded score of the answer returned; the summary
compares cost and quality with sending everything to the top tier.
"""

from __future__ import annotations

import importlib
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
from outcomes import OutcomeRecord, read_outcomes
from router.ladder import Ladder
from router.tokens import estimate_tokens
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
from serving.checks import Answer, CallableCheck
from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage, ReadStats, read_log
from serving.outcome_record import EXPLORE_NEXT, OutcomeLogRecord
from serving.routing import RouterLike
from serving.snapshot import take_snapshot
from serving.tiered_client import TieredClient, TieredClientConfig, TieredClientError


@dataclass(frozen=True)
class DemoConfig:
    bundle: str
    outcomes: str
    log: str
    split: str = "test"
    requests: int = 400
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int = 0
    max_attempts: int = 4
    retry_delay_scale: float = 0.02
    threads: int = 1  # requests in flight at once
    swap_to: str | None = None  # a bundle to hot-swap to mid-run, under load
    swap_after: int = 0  # ... once this many requests have completed
    # What the log keeps of each prompt and answer (serving.outcome_log.PromptStorage):
    # "features" (the default: no text), "store" (the text opt-in), "hash" or "drop".
    prompt_storage: str = "features"
    # Where to write the answers' grades (a downstream check's, from the recorded scores,
    # fake_bedrock/grades.py), joined to the log by request id: the cascade's labels.
    grades_out: str | None = None


def load_router(bundle: str) -> RouterLike:
    """The project's router (imported late so serving works without a bundle)."""
    router_cls = importlib.import_module("router").Router
    router: RouterLike = router_cls.load(bundle)
    return router


def pick_requests(
    records: list[OutcomeRecord], keys: list[str], n: int, seed: int
) -> list[OutcomeRecord]:
    """N records that have a result for every tier, drawn reproducibly."""
    usable = sorted((r for r in records if all(k in r.results for k in keys)), key=lambda r: r.id)
    if len(usable) <= n:
        return usable
    return random.Random(seed).sample(usable, n)


@dataclass
class _Tally:
    """The demo's running totals; one lock, since requests finish on several threads."""

    done: int = 0
    failed: int = 0
    escalations: int = 0
    cost: float = 0.0
    quality: float = 0.0
    final_tiers: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def demo_requests(cfg: DemoConfig, ladder: Ladder) -> list[OutcomeRecord]:
    """The recorded prompts a demo sends: `cfg.requests` of `cfg.split` with every tier's
    result, drawn with `cfg.seed` (on-demand and batch demos alike)."""
    keys = [t.outcomes_key for t in ladder.tiers]
    records = read_outcomes(cfg.outcomes, split=cfg.split)
    chosen = pick_requests(records, keys, cfg.requests, cfg.seed)
    if not chosen:
        raise ValueError(f"{cfg.outcomes}: no {cfg.split!r} records with results for all of {keys}")
    return chosen


def run_demo(cfg: DemoConfig, router: RouterLike, progress: TextIO | None = None) -> dict[str, Any]:
    """Serve the chosen prompts (on `cfg.threads` threads), swapping to `cfg.swap_to`
    after `cfg.swap_after` requests when given; the summary adds, per bundle version,
    its requests, cascade verdicts and escalations, counted from the log."""
    progress = progress if progress is not None else sys.stderr
    ladder = router.ladder
    chosen = demo_requests(cfg, ladder)
    index = OutcomeIndex(chosen, ladder)
    faults = FaultConfig(cfg.throttle_rate, cfg.error_rate, cfg.latency_ms, cfg.seed)
    preload: Future[Any] | None = None
    loader = ThreadPoolExecutor(max_workers=1)
    if cfg.swap_to is not None:  # imported late, as load_router is
        hot_swap = importlib.import_module("router.hot_swap")
        router = hot_swap.SwappableRouter(router)
        # Loading is independent of serving and slower than many requests: it starts
        # now, and the swap (verify, probe, publish) runs after `swap_after` requests.
        preload = loader.submit(load_router, cfg.swap_to)

    def recorded_verdict(answer: Answer) -> bool:
        verdict = index.passed(answer.prompt, answer.model_id)
        return True if verdict is None else verdict

    top = ladder.tiers[-1]
    started = time.monotonic()
    top_cost = sum(
        top.cost_usd(
            estimate_tokens(len(r.prompt)),
            min(recorded_output_tokens(r.results[top.outcomes_key]), top.max_tokens),
        )
        for r in chosen
    )
    top_quality = sum(r.results[top.outcomes_key].score for r in chosen)
    tally = _Tally()
    run = uuid.uuid4().hex[:12]  # request ids unique across runs appending to one log
    rids = [f"demo-{run}-{i}" for i in range(len(chosen))]
    swap: dict[str, Any] | None = None
    tier_quality = {  # always-<tier> on the same prompts
        t.name: sum(r.results[t.outcomes_key].score for r in chosen) for t in ladder.tiers
    }
    logger = OutcomeLogger([JsonlSink(cfg.log)])
    with LocalBedrock(ladder, index, faults) as server:
        bedrock = make_bedrock_client(
            BedrockClientConfig(
                endpoint_url=server.url,
                dummy_credentials=True,
                max_attempts=cfg.max_attempts,
                retry_delay_scale=cfg.retry_delay_scale,
                connect_timeout_s=2.0,
                read_timeout_s=30.0,
                max_pool_connections=max(10, cfg.threads),
            )
        )
        cascade = getattr(take_snapshot(router), "cascade", None) is not None
        client = TieredClient(
            router,
            bedrock,
            logger,
            TieredClientConfig(
                tags={"workload": "demo", "environment": "local"},
                seed=cfg.seed,
                prompt_storage=PromptStorage(cfg.prompt_storage),
            ),
            checks=[] if cascade else [CallableCheck(recorded_verdict, name="recorded_verdict")],
        )
        step = max(1, len(chosen) // 10)

        # Requests from swap_after + threads on wait for the swap: `threads` requests stay
        # in flight while it runs (load under swap), and the rest are after it.
        resolved = threading.Event()
        gate = cfg.swap_after + cfg.threads if cfg.swap_to is not None else len(chosen)

        def do_swap() -> dict[str, Any]:
            assert cfg.swap_to is not None and preload is not None
            try:
                new = preload.result()
                done = router.publish(new, cfg.swap_to)  # type: ignore[attr-defined]
            except Exception as e:  # BundleError: refused, the old bundle keeps serving
                print(f"demo: swap to {cfg.swap_to} refused: {e}", file=progress, flush=True)
                return {"to": cfg.swap_to, "ok": False, "error": str(e)}
            finally:
                resolved.set()
            print(f"demo: swapped {done.old_version} -> {done.new_version}", file=progress)
            return {"to": cfg.swap_to, "ok": True, "from_version": done.old_version,
                    "to_version": done.new_version, "after_requests": cfg.swap_after}  # fmt: skip

        def serve(i: int, rec: OutcomeRecord) -> dict[str, Any] | None:
            if i >= gate:
                resolved.wait()
            try:
                res = client.converse(rec.prompt, tags={"team": "demo"}, request_id=rids[i])
            except TieredClientError:
                res = None
            with tally.lock:
                tally.done += 1
                if res is None:
                    tally.failed += 1
                else:
                    tally.cost += res.cost_usd
                    tally.escalations += res.escalations
                    tally.final_tiers[res.tier] = tally.final_tiers.get(res.tier, 0) + 1
                    if res.ok or cascade:
                        tier = ladder.tiers[ladder.index(res.tier)]
                        tally.quality += rec.results[tier.outcomes_key].score
                n, swap_now = tally.done, cfg.swap_to is not None and tally.done == cfg.swap_after
                if n % step == 0 or n == len(chosen):
                    print(
                        f"demo: {n}/{len(chosen)} requests, {tally.failed} failed, "
                        f"{tally.escalations} escalations, ${tally.cost:.4f} "
                        f"(always-top ${top_cost:.4f})",
                        file=progress,
                        flush=True,
                    )
            # The swap runs on this request's thread while the others keep serving.
            return do_swap() if swap_now else None

        with ThreadPoolExecutor(max_workers=cfg.threads) as pool:
            for got in pool.map(serve, range(len(chosen)), chosen):
                swap = got or swap
        loader.shutdown(wait=True)
        client.close()  # the cascade's exploration calls in flight, and their records
        stats = dict(server.stats)
    logger.close()
    read_stats = ReadStats()
    logged = list(read_log(cfg.log, read_stats))
    n = len(chosen)
    ours = set(rids)  # this run's requests (the log may hold earlier runs')
    explored = [a for r in logged if r.get("request_id") in ours
                for a in r.get("attempts") or [] if a.get("role") == EXPLORE_NEXT]  # fmt: skip
    cost = tally.cost
    summary: dict[str, Any] = {
        "requests": n,
        "failed": tally.failed,
        "escalations": tally.escalations,
        "cost_usd": round(cost, 6),
        "always_top_cost_usd": round(top_cost, 6),
        "quality": round(tally.quality / n, 4),
        "always_top_quality": round(top_quality / n, 4),
        "log": str(Path(cfg.log)),
        "log_records": len(logged),
        "final_tiers": tally.final_tiers,
        "router_version": router.version,
        "judged_by": "verifier" if cascade else "recorded_verdict",
        "cost_vs_top": round(cost / top_cost, 4) if top_cost else None,
        "saved_usd": round(top_cost - cost, 6),
        "always_quality": {k: round(v / n, 4) for k, v in tier_quality.items()},
        "bedrock_calls": stats.get("requests", 0),
        "throttled": stats.get("throttled", 0),
        "server_errors": stats.get("server_errors", 0),
        "seconds": round(time.monotonic() - started, 1),
        "elapsed_s": round(time.monotonic() - started, 1),
        "threads": cfg.threads,
        "by_version": per_version(logged),
        "cascade_explored": len(explored),
        "exploration_cost_usd": round(sum(a.get("cost_usd") or 0.0 for a in explored), 6),
    }
    if cfg.grades_out is not None:
        sent = dict(zip(rids, chosen, strict=True))
        grades = recorded_grades(logged, sent, ladder)
        summary["grades"] = write_grades(Path(cfg.grades_out), grades)
        summary["grades_out"] = cfg.grades_out
    if cfg.swap_to is not None:
        summary["swap"] = swap or {"to": cfg.swap_to, "ok": False, "error": "not reached"}
    return summary


def per_version(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per router version in the log: requests, failed, escalations and the verdicts its
    cascade (or checks) gave, by kind. A record is one request, decided, judged and
    walked by one bundle snapshot, so each request counts under exactly one version."""
    out: dict[str, dict[str, Any]] = {}
    for raw in records:
        rec = OutcomeLogRecord.from_dict(raw)
        v = out.setdefault(
            str(rec.router_version),
            {"requests": 0, "failed": 0, "escalations": 0, "cascade": 0, "verdicts": Counter()},
        )
        v["requests"] += 1
        v["failed"] += rec.final_tier is None
        v["escalations"] += rec.escalations
        v["cascade"] += rec.cascade is not None
        for a in rec.attempts:
            if a.verdict is not None:
                v["verdicts"][a.verdict.kind] += 1
    for v in out.values():
        v["verdicts"] = dict(sorted(v["verdicts"].items()))
    return out


def main_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, separators=(", ", ": "))


def serve_and_grade(
    router: RouterLike,
    sent: Mapping[str, OutcomeRecord],
    recorded: Iterable[OutcomeRecord],
    config: TieredClientConfig,
    log_path: Path,
    grades_path: Path,
    threads: int = 4,
) -> dict[str, Any]:
    """Send each prompt of `sent` (request id -> its outcomes record) through a client on
    the local server answering as `recorded` did, log every request to `log_path`, then
    write the logged answers' grades (their recorded scores, a downstream check's
    stand-in) to `grades_path`. The feedback loop's serving step (training/feedback_loop)."""
    ladder = router.ladder
    logger = OutcomeLogger([JsonlSink(log_path)])
    failed = [0]
    lock = threading.Lock()
    with LocalBedrock(ladder, OutcomeIndex(recorded, ladder), FaultConfig(seed=0)) as server:
        bedrock = make_bedrock_client(
            BedrockClientConfig(
                endpoint_url=server.url,
                dummy_credentials=True,
                max_attempts=4,
                retry_delay_scale=0.01,
                max_pool_connections=max(10, threads),
            )
        )
        client = TieredClient(router, bedrock, logger, config)

        def one(item: tuple[str, OutcomeRecord]) -> None:
            try:
                client.converse(item[1].prompt, request_id=item[0])
            except TieredClientError:
                with lock:
                    failed[0] += 1

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, sent.items()))
        client.close()
    logger.close()
    logged = list(read_log(log_path, ReadStats()))
    n_grades = write_grades(grades_path, recorded_grades(logged, sent, ladder))
    explored = sum(1 for r in logged for a in r["attempts"] if a.get("role") == EXPLORE_NEXT)
    return {
        "requests": len(sent),
        "failed": failed[0],
        "logged": len(logged),
        "grades": n_grades,
        "explored": explored,
        "cost_usd": round(sum(r["cost_usd"] for r in logged), 6),
    }
