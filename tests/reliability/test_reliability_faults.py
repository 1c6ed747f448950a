"""A short fault storm against the local Bedrock server and moto S3: throttling bursts,
a tier down for a window, responses slower than the client timeout, and S3 going away.
Counts requests served, failed and outcome records lost; the bar is zero and zero."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fake_bedrock import FaultConfig, LocalBedrock
from router.ladder import Ladder
from serving.outcome_log import OutcomeLogger
from serving.routing import FixedTierRouter
from serving.s3_sink import S3Sink, S3SinkConfig
from serving.tiered_client import TieredClient, TieredClientConfig, TieredClientError


def _storm_client(
    server: LocalBedrock, ladder: Ladder, make_client: Callable[..., Any], sink: Any, tier: int
) -> TieredClient:
    return TieredClient(
        FixedTierRouter(ladder, tier),
        make_client(server.url, max_attempts=3, read_timeout_s=0.5),
        OutcomeLogger([sink]),
        TieredClientConfig(use_builtin_checks=False),
    )


def _send(client: TieredClient, n: int, threads: int = 2) -> tuple[int, int]:
    served = failed = 0
    lock = threading.Lock()

    def run(k: int) -> None:
        nonlocal served, failed
        for i in range(k, n, threads):
            try:
                client.converse(f"storm request {i}: what is {i} + {i}?")
                ok = True
            except TieredClientError:
                ok = False
            with lock:
                served += ok
                failed += not ok

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return served, failed


def test_fault_storm_serves_everything_and_loses_no_record(
    server: LocalBedrock,
    rb_ladder: Ladder,
    make_client: Callable[..., Any],
    moto: Any,
    tmp_path: Path,
) -> None:
    sink = S3Sink(
        S3SinkConfig(
            bucket=moto.bucket,
            spool_dir=str(tmp_path / "spool"),
            endpoint_url=moto.url,
            batch_size=7,
            connect_timeout_s=0.5,
            read_timeout_s=2.0,
            max_attempts=2,
            dummy_credentials=True,
        )
    )
    haiku, sonnet = (t.model_id for t in rb_ladder.tiers[:2])
    counts: dict[str, tuple[int, int]] = {}

    server.faults = FaultConfig(throttle_rate=0.5, seed=7)  # 50% throttling burst
    counts["throttle_50pct"] = _send(_storm_client(server, rb_ladder, make_client, sink, 0), 30)
    server.faults = FaultConfig()

    # The cheapest tier down for exactly this phase (a set, not a clock window, so a slow
    # machine cannot let some requests through to it), then back.
    refused_before = server.stats["unavailable"]
    server.unavailable_models.add(haiku)
    counts["tier_down"] = _send(_storm_client(server, rb_ladder, make_client, sink, 0), 12)
    server.unavailable_models.discard(haiku)
    assert server.stats["unavailable"] - refused_before >= 12  # every request met the outage

    server.model_latency_ms[sonnet] = 800  # slower than the 0.5 s read timeout
    counts["slow_tier"] = _send(_storm_client(server, rb_ladder, make_client, sink, 1), 4)
    server.model_latency_ms.clear()

    moto.stop()  # S3 unavailable: records spool locally
    counts["s3_down"] = _send(_storm_client(server, rb_ladder, make_client, sink, 0), 20)
    assert sink.upload_ready() == 0 and sink.pending_batches()
    moto.start()  # S3 back: the spool drains
    assert sink.flush() == 0
    sink.close()

    sent = sum(s + f for s, f in counts.values())
    served = sum(s for s, _ in counts.values())
    failed = sum(f for _, f in counts.values())
    stored = moto.records()
    lost = sent - len({r["request_id"] for r in stored})
    print(json.dumps({"phases": counts, "served": served, "failed": failed, "lost": lost}))
    assert (failed, lost) == (0, 0) and served == sent == 66
    assert server.stats["throttled"] > 0 and server.stats["unavailable"] > 0
    tiers = [r["final_tier"] for r in stored]
    assert "sonnet" in tiers and "opus" in tiers, "outage and slowness were failed over"
    assert not list((tmp_path / "spool").glob("batch-*"))
