"""Fault storm against the local Bedrock server (127.0.0.1) and moto S3, through the
real boto3 client: 50% throttling bursts, the cheapest tier down for a minute, a tier
slower than the client timeout, and S3 unavailable (records spool, then upload).
Prints requests sent / served / failed and outcome records lost per phase.

    python benchmarks/fault_storm.py [--outage-s 60] [--threads 8] [--rate-per-phase 400]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moto.server import ThreadedMotoServer  # noqa: E402

from fake_bedrock import FaultConfig, LocalBedrock  # noqa: E402
from fake_bedrock.batch import loopback_s3_client  # noqa: E402
from router.ladder import Ladder  # noqa: E402
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client  # noqa: E402
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log  # noqa: E402
from serving.routing import FixedTierRouter  # noqa: E402
from serving.s3_sink import S3Sink, S3SinkConfig  # noqa: E402
from serving.tiered_client import TieredClient, TieredClientConfig, TieredClientError  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send(clients: list[TieredClient], n: int, threads: int, until: float = 0.0) -> dict[str, int]:
    """n requests over `threads` (or keep going until monotonic time `until`)."""
    c = {"sent": 0, "served": 0, "failed": 0}
    lock = threading.Lock()
    counter = iter(range(10**9))

    def run() -> None:
        while True:
            with lock:
                i = next(counter)
            if (until and time.monotonic() >= until) or (not until and i >= n):
                return
            client = clients[i % len(clients)]
            try:
                client.converse(f"storm {i}: explain why {i} is {'even' if i % 2 else 'odd'}?")
                ok = True
            except TieredClientError:
                ok = False
            with lock:
                c["sent"] += 1
                c["served" if ok else "failed"] += 1

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage-s", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--per-phase", type=int, default=400)
    ap.add_argument("--read-timeout-s", type=float, default=1.0)
    a = ap.parse_args()
    ladder = Ladder.load(REPO / "data" / "ladders" / "routerbench_subset.toml")
    haiku, sonnet = ladder.tiers[0].model_id, ladder.tiers[1].model_id
    work = Path(tempfile.mkdtemp(prefix="fault-storm-"))
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    s3_url, bucket = f"http://127.0.0.1:{port}", f"storm-{uuid.uuid4().hex[:8]}"
    s3 = loopback_s3_client(s3_url)
    s3.create_bucket(Bucket=bucket)
    sink = S3Sink(
        S3SinkConfig(
            bucket=bucket, spool_dir=str(work / "spool"), endpoint_url=s3_url, batch_size=50,
            upload_interval_s=0.5, max_batch_age_s=1.0, connect_timeout_s=0.5,
            read_timeout_s=2.0, max_attempts=2, dummy_credentials=True,
        )
    ).start()  # fmt: skip
    local = JsonlSink(work / "outcomes.jsonl")
    logger = OutcomeLogger([local, sink])
    server = LocalBedrock(ladder).start()
    bedrock = make_bedrock_client(
        BedrockClientConfig(
            endpoint_url=server.url, dummy_credentials=True, max_attempts=3,
            retry_delay_scale=0.05, connect_timeout_s=1.0, read_timeout_s=a.read_timeout_s,
            max_pool_connections=a.threads * 2,
        )
    )  # fmt: skip
    cfg = TieredClientConfig(use_builtin_checks=False)
    clients = [TieredClient(FixedTierRouter(ladder, t), bedrock, logger, cfg) for t in (0, 1)]
    phases: dict[str, Any] = {}
    t0 = time.monotonic()

    server.faults = FaultConfig(throttle_rate=0.5, seed=1)
    phases["throttle_50pct"] = send(clients, a.per_phase, a.threads)
    server.faults = FaultConfig()

    server.outage(haiku, a.outage_s)
    phases[f"haiku_down_{a.outage_s:g}s"] = send(
        clients, 0, a.threads, until=time.monotonic() + a.outage_s
    )
    server.outages.clear()

    server.model_latency_ms[sonnet] = a.read_timeout_s * 1500  # past the client timeout
    phases["sonnet_slower_than_timeout"] = send(clients[1:], a.per_phase // 8, a.threads)
    server.model_latency_ms.clear()

    moto.stop()
    phases["s3_down"] = send(clients, a.per_phase, a.threads)
    spooled = len(sink.pending_batches())
    time.sleep(1.0)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    pending = sink.flush()
    sink.close()
    local.close()

    sent = sum(p["sent"] for p in phases.values())
    local_ids = {r["request_id"] for r in read_log(work / "outcomes.jsonl")}
    s3_ids: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            s3_ids |= {json.loads(x)["request_id"] for x in body.splitlines() if x.strip()}
    report = {
        "phases": phases,
        "sent": sent,
        "served": sum(p["served"] for p in phases.values()),
        "failed": sum(p["failed"] for p in phases.values()),
        "faults_injected": {k: server.stats[k] for k in ("throttled", "unavailable")},
        "bedrock_calls": server.stats["requests"],
        "s3_batches_spooled_while_down": spooled,
        "s3_batches_still_pending": pending,
        "records_lost_local": sent - len(local_ids),
        "records_lost_s3": sent - len(s3_ids),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    server.stop()
    moto.stop()
    print(json.dumps(report, indent=2))
    ok = report["failed"] == 0 and report["records_lost_s3"] == report["records_lost_local"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
