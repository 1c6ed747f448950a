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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fake_bedrock import FaultConfig, LocalBedrock, OutcomeIndex, recorded_output_tokens
from outcomes import OutcomeRecord, read_outcomes
from router.tokens import estimate_tokens
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
from serving.checks import Answer, CallableCheck
from serving.outcome_log import JsonlSink, OutcomeLogger, ReadStats, read_log
from serving.routing import RouterLike
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


def run_demo(
    cfg: DemoConfig, router: RouterLike, progress: TextIO | None = None
) -> dict[str, Any]:
    progress = progress if progress is not None else sys.stderr
    ladder = router.ladder
    keys = [t.outcomes_key for t in ladder.tiers]
    records = read_outcomes(cfg.outcomes, split=cfg.split)
    chosen = pick_requests(records, keys, cfg.requests, cfg.seed)
    if not chosen:
        raise ValueError(f"{cfg.outcomes}: no {cfg.split!r} records with results for all of {keys}")
    index = OutcomeIndex(chosen, ladder)
    faults = FaultConfig(cfg.throttle_rate, cfg.error_rate, cfg.latency_ms, cfg.seed)

    def recorded_verdict(answer: Answer) -> bool:
        verdict = index.passed(answer.prompt, answer.model_id)
        return True if verdict is None else verdict

    top = ladder.tiers[-1]
    started = time.monotonic()
    failed = escalations = 0
    cost = top_cost = quality = top_quality = 0.0
    final_tiers: dict[str, int] = {}
    tier_quality = dict.fromkeys(ladder.names, 0.0)  # always-<tier> on the same prompts
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
            )
        )
        cascade = getattr(router, "cascade", None) is not None
        client = TieredClient(
            router,
            bedrock,
            logger,
            TieredClientConfig(tags={"workload": "demo", "environment": "local"}, seed=cfg.seed),
            checks=[] if cascade else [CallableCheck(recorded_verdict, name="recorded_verdict")],
        )
        step = max(1, len(chosen) // 10)
        for i, rec in enumerate(chosen, 1):
            top_result = rec.results[top.outcomes_key]
            top_out = min(recorded_output_tokens(top_result), top.max_tokens)
            top_cost += top.cost_usd(estimate_tokens(len(rec.prompt)), top_out)
            top_quality += top_result.score
            for t in ladder.tiers:
                tier_quality[t.name] += rec.results[t.outcomes_key].score
            try:
                res = client.converse(rec.prompt, tags={"team": "demo"})
            except TieredClientError:
                failed += 1
            else:
                cost += res.cost_usd
                escalations += res.escalations
                final_tiers[res.tier] = final_tiers.get(res.tier, 0) + 1
                if res.ok or cascade:
                    tier = ladder.tiers[ladder.index(res.tier)]
                    quality += rec.results[tier.outcomes_key].score
            if i % step == 0 or i == len(chosen):
                print(
                    f"demo: {i}/{len(chosen)} requests, {failed} failed, "
                    f"{escalations} escalations, ${cost:.4f} (always-top ${top_cost:.4f})",
                    file=progress,
                    flush=True,
                )
        stats = dict(server.stats)
    logger.close()
    read_stats = ReadStats()
    logged = sum(1 for _ in read_log(cfg.log, read_stats))
    n = len(chosen)
    return {
        "requests": n,
        "failed": failed,
        "escalations": escalations,
        "cost_usd": round(cost, 6),
        "always_top_cost_usd": round(top_cost, 6),
        "quality": round(quality / n, 4),
        "always_top_quality": round(top_quality / n, 4),
        "log": str(Path(cfg.log)),
        "log_records": logged,
        "final_tiers": final_tiers,
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
    }


def main_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, separators=(", ", ": "))
