"""Benchmark: batch-mode labeling of 1k and 10k real prompts across three tiers, offline.

Prompts are mmlu_pro questions from ../shared/data. The gold letters are placeholders
(the data has no gold); the local Bedrock server answers each (prompt, tier) with that
letter when the recorded model passed and another letter when it failed, so the
labels reproduce the recorded outcomes. S3 is moto on loopback; both servers run in a
separate process so the labeler's peak RSS is its own. Each size runs in a fresh
worker process and reports wall time, peak RSS (getrusage) and the peak of Python
allocations (tracemalloc).

    .venv/bin/python benchmarks/label_batch.py [--sizes 1000 10000] [--no-tracemalloc]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("TIER_ROUTER_SHARED_DATA", REPO.parent / "shared" / "data"))
LADDER = REPO / "data" / "ladders" / "mmlu_pro.toml"
ROLE = "arn:aws:iam::123456789012:role/bedrock-batch"


def placeholder_letter(rec: dict) -> str:
    letters = [
        ln[0]
        for ln in rec["prompt"].splitlines()
        if len(ln) > 2 and ln[1] == "." and ln[0] in "ABCDEFGHIJ"
    ] or ["A"]
    return letters[int(hashlib.sha256(rec["id"].encode()).hexdigest(), 16) % len(letters)]


def prepare(workdir: Path, n: int) -> tuple[Path, Path]:
    """The server's outcomes file (with references) and the first-n prompts files."""
    outcomes = workdir / "server_outcomes.jsonl"
    prompts = workdir / f"prompts_{n}.jsonl"
    with (
        gzip.open(SHARED / "mmlu_pro.jsonl.gz", "rt", encoding="utf-8") as src,
        outcomes.open("w") as o,
        prompts.open("w") as p,
    ):
        for i, line in enumerate(src):
            if i >= n:
                break
            rec = json.loads(line)
            rec["reference"] = placeholder_letter(rec)
            o.write(json.dumps(rec) + "\n")
            p.write(
                json.dumps({k: rec[k] for k in ("id", "prompt", "reference", "task", "split")})
                + "\n"
            )
    return outcomes, prompts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(outcomes: Path) -> None:
    """Child process: moto S3 + local Bedrock; prints their URLs, runs until stdin closes."""
    import logging

    from moto.server import ThreadedMotoServer

    from fake_bedrock import LocalBedrock, OutcomeIndex
    from outcomes import iter_outcomes
    from router.ladder import Ladder

    logging.disable(logging.CRITICAL)
    ladder = Ladder.load(LADDER)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    s3_url = f"http://127.0.0.1:{port}"
    srv = LocalBedrock(
        ladder, OutcomeIndex(iter_outcomes(outcomes), ladder), s3_endpoint_url=s3_url
    ).start()
    print(json.dumps({"bedrock": srv.url, "s3": s3_url}), flush=True)
    sys.stdin.read()
    srv.stop()
    moto.stop()


def worker(prompts: Path, out: Path, bedrock: str, s3: str, bucket: str, trace: bool) -> None:
    """Child process: one batch labeling run; prints its measurements as JSON."""
    import tracemalloc

    from labeling.batch import BatchClients, run_batch
    from labeling.clients import control_client, s3_client
    from labeling.config import AwsConfig, BatchConfig, LabelConfig
    from labeling.graders import ChoiceGrader, GraderSet
    from router.ladder import Ladder

    if trace:
        tracemalloc.start()
    aws = AwsConfig(endpoint_url=bedrock, s3_endpoint_url=s3, dummy_credentials=True)
    s3c = s3_client(aws)
    s3c.create_bucket(Bucket=bucket)
    started = time.monotonic()
    summary = run_batch(
        LabelConfig(prompts, out, progress=False),
        BatchConfig(bucket, ROLE, poll_interval_s=0.5),
        Ladder.load(LADDER),
        GraderSet(ChoiceGrader()),
        BatchClients(control_client(aws), s3c),
    )
    wall = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    print(
        json.dumps(
            {
                "summary": summary.to_dict(),
                "wall_s": round(wall, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "tracemalloc_peak_mb": None if peak is None else round(peak / 2**20, 1),
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--no-tracemalloc", action="store_true")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if args.worker:
        p, o, b, s, bucket = args.worker
        worker(Path(p), Path(o), b, s, bucket, not args.no_tracemalloc)
        return 0
    work = Path(tempfile.mkdtemp(prefix="label-bench-"))
    outcomes, _ = prepare(work, max(args.sizes))
    for n in args.sizes:
        prepare_n = work / f"prompts_{n}.jsonl"
        if not prepare_n.exists():
            with (
                (work / f"prompts_{max(args.sizes)}.jsonl").open() as src,
                prepare_n.open("w") as d,
            ):
                for i, line in enumerate(src):
                    if i >= n:
                        break
                    d.write(line)
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "--serve", str(outcomes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    urls = json.loads(server.stdout.readline())
    rows = []
    try:
        for n in args.sizes:
            cmd = [
                *me,
                "--worker",
                str(work / f"prompts_{n}.jsonl"),
                str(work / f"out_{n}.jsonl"),
                urls["bedrock"],
                urls["s3"],
                f"bench-{n}",
            ]
            if args.no_tracemalloc:
                cmd.append("--no-tracemalloc")
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["prompts"] = n
            rows.append(row)
            s = row["summary"]
            print(
                f"{n:>6} prompts x 3 tiers: {row['wall_s']:>6.1f} s wall, peak RSS "
                f"{row['peak_rss_mb']:.0f} MB, tracemalloc peak {row['tracemalloc_peak_mb']} MB; "
                f"status {s['status']}, {s['calls']} records, batch ${s['batch_cost_usd']:.2f} "
                f"vs on-demand ${s['ondemand_cost_usd']:.2f}",
                flush=True,
            )
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    print(json.dumps({"results": [{k: v for k, v in r.items() if k != "summary"} for r in rows]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
