"""Async load: N real prompts through AsyncTieredClient at a set concurrency against the
local Bedrock server with injected throttling. Reports failures, lost records (log lines
counted), throughput, and the client's own overhead per request, which excludes the
server's time: the record's latency minus the Bedrock calls its attempts timed (routing,
checks, the record and the log write), and the asyncio hop (await time minus the record's
latency: the pool and the event loop). The server runs in its own process by default
(`tier-router local-bedrock`), so its threads do not share the client's GIL.

    python benchmarks/async_load.py                      # 2,000 requests, 64 at a time, 20% 429s
    python benchmarks/async_load.py --bundle B --outcomes O --tiers T
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fake_bedrock import FaultConfig, LocalBedrock, OutcomeIndex  # noqa: E402
from outcomes import read_outcomes  # noqa: E402
from router.ladder import Ladder  # noqa: E402
from serving.async_client import AsyncTieredClient  # noqa: E402
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client  # noqa: E402
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log  # noqa: E402
from serving.routing import FixedTierRouter, RouterLike  # noqa: E402
from serving.tiered_client import TieredClient, TieredClientConfig, TieredClientError  # noqa: E402

DATA = REPO.parent / "shared" / "data"


@contextlib.contextmanager
def server_process(outcomes: Path, tiers: Path, throttle: float) -> Iterator[tuple[str, dict]]:
    """`tier-router local-bedrock` in a subprocess: yields its URL and, after it stops,
    fills the dict with the stats it prints."""
    cmd = [
        sys.executable,
        "-m",
        "tier_router.cli",
        "local-bedrock",
        "--outcomes",
        str(outcomes),
        "--tiers",
        str(tiers),
        "--throttle-rate",
        str(throttle),
        "--seed",
        "7",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stats: dict = {}
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        yield url, stats
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        for line in err.splitlines():
            if "stopped; " in line:
                stats.update(ast.literal_eval(line.split("stopped; ", 1)[1]))


@contextlib.contextmanager
def server_in_process(ladder: Ladder, records: list, throttle: float) -> Iterator[tuple[str, dict]]:
    stats: dict = {}
    with LocalBedrock(ladder, OutcomeIndex(records, ladder), FaultConfig(throttle, seed=7)) as srv:
        yield srv.url, stats
        stats.update(srv.stats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--throttle-rate", type=float, default=0.2)
    ap.add_argument("--outcomes", type=Path, default=DATA / "mmlu_pro.jsonl.gz")
    ap.add_argument("--tiers", type=Path, default=REPO / "data" / "ladders" / "mmlu_pro.toml")
    ap.add_argument("--bundle", type=Path, default=None, help="a trained bundle (default: tier 0)")
    ap.add_argument("--max-attempts", type=int, default=4)
    ap.add_argument("--in-process", action="store_true", help="run the server in this process")
    a = ap.parse_args()
    if a.requests < 1 or not 1 <= a.concurrency <= 1024 or not 0 <= a.throttle_rate < 1:
        ap.error("need --requests >= 1, --concurrency in [1, 1024], --throttle-rate in [0, 1)")
    ladder = Ladder.load(a.tiers)
    records = read_outcomes(a.outcomes, split="test")[:2000]
    prompts = [r.prompt for r in records]
    router: RouterLike
    if a.bundle is not None:
        from router import Router

        router = Router.load(a.bundle)
    else:
        router = FixedTierRouter(ladder, 0)
    log = Path(tempfile.mkdtemp(prefix="async_load_")) / "log.jsonl"
    if a.in_process:
        server = server_in_process(ladder, records, a.throttle_rate)
    else:
        server = server_process(a.outcomes, a.tiers, a.throttle_rate)
    with server as (url, stats):
        bedrock = make_bedrock_client(
            BedrockClientConfig(
                endpoint_url=url,
                dummy_credentials=True,
                max_attempts=a.max_attempts,
                retry_delay_scale=0.01,
                max_pool_connections=a.concurrency,
            )
        )
        logger = OutcomeLogger([JsonlSink(log)])
        client = TieredClient(router, bedrock, logger, TieredClientConfig())
        aclient = AsyncTieredClient(client, max_concurrency=a.concurrency)
        hop_ms: list[float] = []
        failed = 0

        async def worker(queue: asyncio.Queue[int]) -> None:
            nonlocal failed
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                try:
                    res = await aclient.converse(prompts[i % len(prompts)], request_id=f"r{i}")
                except TieredClientError:
                    failed += 1
                    continue
                hop_ms.append((time.perf_counter() - t) * 1000 - res.latency_ms)

        async def run() -> float:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(a.requests):
                queue.put_nowait(i)
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(queue) for _ in range(a.concurrency)))
            return time.perf_counter() - t0

        cpu0 = time.process_time()
        seconds = asyncio.run(run())
        cpu_s = time.process_time() - cpu0
        aclient.close()
        logger.close()
    logged = list(read_log(log))
    overhead = [r["latency_ms"] - sum(x["latency_ms"] for x in r["attempts"]) for r in logged]
    p = lambda xs, q: round(float(np.percentile(xs, q)), 3) if xs else None  # noqa: E731
    print(
        json.dumps(
            {
                "requests": a.requests,
                "concurrency": a.concurrency,
                "throttle_rate": a.throttle_rate,
                "router": "bundle" if a.bundle else "fixed tier 0",
                "server": "in-process" if a.in_process else "subprocess",
                "failed": failed,
                "log_records": len(logged),
                "records_lost": a.requests - len(logged),
                "bedrock_calls": stats.get("requests", 0),
                "throttled": stats.get("throttled", 0),
                "seconds": round(seconds, 2),
                "throughput_rps": round(a.requests / seconds, 1),
                "client_overhead_ms": {"p50": p(overhead, 50), "p99": p(overhead, 99)},
                "async_hop_ms": {"p50": p(hop_ms, 50), "p99": p(hop_ms, 99)},
                "client_cpu_ms_per_request": round(cpu_s * 1000 / a.requests, 3),
            },
            indent=1,
        )
    )
    return 0 if failed == 0 and len(logged) == a.requests else 1


if __name__ == "__main__":
    raise SystemExit(main())
