"""Client load with hot swaps: N threads x M requests through one TieredClient (cascade on)
on a SwappableRouter against the local Bedrock server, swapping bundles K times under load.
Reports failures, logged records vs requests, requests per bundle version and requests/s.

    python benchmarks/client_swap_load.py --bundle-a A --bundle-b B --outcomes ANSWERS \\
        [--threads 8 --per-thread 10000 --swaps 2 --throttle-rate 0.2]

A and B: bundles over the same ladder with a cascade (trained on an answers file);
ANSWERS: that file (its test prompts are sent, answered as recorded).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fake_bedrock import FaultConfig, LocalBedrock, OutcomeIndex  # noqa: E402
from outcomes import read_outcomes  # noqa: E402
from router.hot_swap import SwappableRouter  # noqa: E402
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client  # noqa: E402
from serving.outcome_log import JsonlSink, OutcomeLogger, ReadStats, read_log  # noqa: E402
from serving.tiered_client import TieredClient, TieredClientConfig  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle-a", type=Path, required=True)
    ap.add_argument("--bundle-b", type=Path, required=True)
    ap.add_argument("--outcomes", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--per-thread", type=int, default=10_000)
    ap.add_argument("--swaps", type=int, default=2)
    ap.add_argument("--throttle-rate", type=float, default=0.0)
    ap.add_argument("--log", type=Path, default=None)
    a = ap.parse_args()
    sr = SwappableRouter.load(a.bundle_a)
    ladder = sr.ladder
    keys = [t.outcomes_key for t in ladder.tiers]
    records = [r for r in read_outcomes(a.outcomes, "test") if all(k in r.results for k in keys)]
    log = a.log or Path(tempfile.mkdtemp(prefix="client-swap-")) / "log.jsonl"
    logger = OutcomeLogger([JsonlSink(log)])
    n = a.per_thread
    failures = [0] * a.threads
    errors: list[str] = []
    marks = [threading.Barrier(a.threads + 1) for _ in range(a.swaps)]
    at = [n * (s + 1) // (a.swaps + 1) for s in range(a.swaps)]  # evenly spread swaps
    swapped: list[dict[str, object]] = []
    faults = FaultConfig(throttle_rate=a.throttle_rate, seed=0)
    with LocalBedrock(ladder, OutcomeIndex(records, ladder), faults) as server:
        bedrock = make_bedrock_client(
            BedrockClientConfig(
                endpoint_url=server.url,
                dummy_credentials=True,
                max_attempts=6,
                retry_delay_scale=0.01,
                max_pool_connections=max(16, a.threads),
            )
        )
        client = TieredClient(sr, bedrock, logger, TieredClientConfig(seed=0))

        def worker(k: int) -> None:
            for i in range(n):
                if i in at:
                    marks[at.index(i)].wait()
                rec = records[(k * n + i) % len(records)]
                try:
                    client.converse(rec.prompt, request_id=f"{k}-{i}")
                except Exception as e:
                    failures[k] += 1
                    if len(errors) < 5:
                        errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(a.threads)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for s, mark in enumerate(marks):
            mark.wait()  # every thread is at the mark; they go on while the swap runs
            target = a.bundle_b if s % 2 == 0 else a.bundle_a
            ts = time.perf_counter()
            done = sr.swap(target)
            swapped.append(
                {"to": done.new_version, "swap_s": round(time.perf_counter() - ts, 3)}
            )
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        client.close()  # exploration calls in flight write their records
        stats = dict(server.stats)
    logger.close()
    st = ReadStats()
    per_version: Counter[str] = Counter()
    ids: set[str] = set()
    for r in read_log(log, st):
        per_version[str(r.get("router_version"))] += 1
        ids.add(str(r.get("request_id")))
    total = a.threads * n
    report = {
        "threads": a.threads,
        "requests": total,
        "failed": sum(failures),
        "errors": errors,
        "records_logged": st.records,
        "distinct_request_ids": len(ids),
        "lost_records": total - len(ids),
        "logger_dropped": logger.stats()["dropped"],
        "per_version": dict(per_version),
        "swaps": swapped,
        "bedrock_calls": stats.get("requests", 0),
        "throttled": stats.get("throttled", 0),
        "wall_s": round(wall, 1),
        "requests_per_s": round(total / wall, 1),
        "log": str(log),
    }
    print(json.dumps(report))
    return 0 if report["failed"] == 0 and report["lost_records"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
