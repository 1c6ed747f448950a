"""Benchmark: the front of a routed batch run on N synthetic records, against the local
Bedrock batch API and S3 on moto (both in a child process, so the peak RSS is the run's).

Measured in this process, each phase timed: reading and validating the input JSONL,
routing every record (the bundle's batch path, in chunks), planning round 1 (each
record's start tier) and saving the state, and writing the per-tier Batch input files to
S3 and creating the jobs. The jobs are left waiting (the server starts them an hour
later), so nothing else competes for the CPU. Reports records/s (wall, and per CPU-second
of this process, for a shared machine) and peak RSS (getrusage).

    python benchmarks/batch_route.py --bundle BUNDLE [--records 100000] [--records-per-job 10000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ROLE = "arn:aws:iam::123456789012:role/bedrock-batch"
# fmt: off
WORDS = (
    "what", "is", "the", "derivative", "of", "given", "that", "a", "function", "prime",
    "explain", "why", "capital", "economy", "photosynthesis", "translate", "into", "French",
    "summarize", "this", "paragraph", "which", "following", "options", "best", "describes",
    "protein", "enzyme", "court", "ruling",
)
# fmt: on


def synthetic(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            words = rng.choices(WORDS, k=rng.randint(8, 120))
            f.write(json.dumps({"id": f"rec-{i}", "prompt": " ".join(words) + "?"}) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(bundle: str) -> None:
    """Child process: moto S3 + local Bedrock; prints their URLs, runs until stdin closes."""
    import logging

    from moto.server import ThreadedMotoServer

    from fake_bedrock import LocalBedrock
    from router import Router

    logging.disable(logging.CRITICAL)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    s3_url = f"http://127.0.0.1:{port}"
    ladder = Router.load(bundle).ladder
    srv = LocalBedrock(ladder, s3_endpoint_url=s3_url, batch_start_delay_s=3600).start()
    print(json.dumps({"bedrock": srv.url, "s3": s3_url}), flush=True)
    sys.stdin.read()
    srv.stop()
    moto.stop()


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True, help="a bundle with a cascade")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--records-per-job", type=int, default=10_000)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.bundle)
        return 0

    from fake_bedrock.batch import loopback_s3_client
    from router import Router
    from serving.batch_input import read_items
    from serving.batch_run import BatchClients, BatchRunConfig, BatchRunner
    from serving.batch_run_state import StateStore
    from serving.batch_walk import Judge
    from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
    from serving.cascade_run import find_cascade
    from serving.checks import builtin_checks

    work = Path(tempfile.mkdtemp(prefix="batch-route-bench-"))
    inp = work / "input.jsonl"
    synthetic(inp, a.records)
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--bundle", a.bundle],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    urls = json.loads(child.stdout.readline())
    try:
        router = Router.load(a.bundle)
        s3 = loopback_s3_client(urls["s3"])
        s3.create_bucket(Bucket="bench")
        bedrock = make_bedrock_client(
            BedrockClientConfig(endpoint_url=urls["bedrock"], dummy_credentials=True),
            service="bedrock",
        )
        cfg = BatchRunConfig("bench", ROLE, records_per_job=a.records_per_job, progress=False)
        judge = Judge(router.ladder, find_cascade(router, "policy"), builtin_checks())
        runner = BatchRunner(
            cfg, router, judge, BatchClients(bedrock, s3), StateStore(str(work / "state.json"))
        )
        cpu0 = _cpu_s()
        t = [time.perf_counter()]
        items = read_items(inp)
        t.append(time.perf_counter())
        state = runner.prepare(inp, items)
        t.append(time.perf_counter())
        runner.plan_round(state, items)
        t.append(time.perf_counter())
        jobs = state.round_jobs(1)
        runner.submit(state, items, jobs)
        t.append(time.perf_counter())
        cpu = _cpu_s() - cpu0
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    n = len(items)
    phases = ("read_validate", "route", "plan_round_1", "write_inputs_create_jobs")
    secs = {p: round(t[i + 1] - t[i], 3) for i, p in enumerate(phases)}
    total = t[-1] - t[0]
    print(
        json.dumps(
            {
                "records": n,
                "jobs": len(jobs),
                "records_per_job": a.records_per_job,
                "seconds": secs,
                "total_s": round(total, 3),
                "records_per_s": round(n / total),
                "routing_records_per_s": round(n / secs["route"]),
                # The machine may be shared: records per CPU-second of this process is
                # what the code does with the CPU it got (S3 and the server are elsewhere).
                "cpu_s": round(cpu, 3),
                "records_per_cpu_s": round(n / cpu),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
