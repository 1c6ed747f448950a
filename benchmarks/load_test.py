"""Load test: N threads route real prompts through one SwappableRouter while a second
bundle is swapped in halfway. Reports throughput, p50/p99 latency, failures and
mixed-version decisions (a sample re-scored by the router of the recorded version).

    python benchmarks/load_test.py --bundle-a A --bundle-b B          # existing bundles
    python benchmarks/load_test.py --train-into /tmp/lt               # trains two small ones
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from router import Router  # noqa: E402
from router.hot_swap import SwappableRouter  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def test_prompts(limit: int) -> list[str]:
    out: list[str] = []
    for f in ("routerbench_subset.jsonl.gz", "mmlu_pro.jsonl.gz"):
        with gzip.open(DATA / f, "rt", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                if r.get("split") == "test":
                    out.append(r["prompt"])
                if len(out) >= limit:
                    return out
    return out


def train_pair(into: Path) -> tuple[Path, Path]:
    """Two real fast bundles on a slice of routerbench_subset: other seed, goal, clusters."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import slice_outcomes

    from training.model import ModelConfig
    from training.pipeline import TrainConfig, train

    into.mkdir(parents=True, exist_ok=True)
    data = slice_outcomes(DATA / "routerbench_subset.jsonl.gz", into / "rb.jsonl", 1500, 500)
    ladder = REPO / "data" / "ladders" / "routerbench_subset.toml"
    out = []
    for name, seed, goal, k in (("a", 0, "mid", (8, 24)), ("b", 1, "top", (6, 16))):
        cfg = TrainConfig(
            outcomes=data, tiers=ladder, out=into / name, featurizer="fast",
            model=ModelConfig(n_clusters=k), folds=3, goal=goal, seed=seed,
        )  # fmt: skip
        out.append(train(cfg).bundle)
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle-a", type=Path)
    ap.add_argument("--bundle-b", type=Path)
    ap.add_argument("--train-into", type=Path, default=Path("/tmp/tier-router-load-test"))
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--per-thread", type=int, default=100_000)
    ap.add_argument("--prompts", type=int, default=5_000)
    ap.add_argument("--verify-every", type=int, default=97, help="re-score 1 in N decisions")
    a = ap.parse_args()
    if a.bundle_a is None or a.bundle_b is None:
        a.bundle_a, a.bundle_b = train_pair(a.train_into)
    prompts = test_prompts(a.prompts)
    ra, rb = Router.load(a.bundle_a), Router.load(a.bundle_b)
    by_version = {ra.version: ra, rb.version: rb}
    sr = SwappableRouter(Router.load(a.bundle_a))
    n = a.per_thread
    lat = np.zeros((a.threads, n), dtype=np.float64)
    picks = np.zeros((a.threads, n), dtype=np.int32)
    versions: list[list[str]] = [[""] * n for _ in range(a.threads)]
    sample: list[list[tuple[int, dict[str, float], str]]] = [[] for _ in range(a.threads)]
    failures = [0] * a.threads
    errors: list[str] = []
    half = threading.Barrier(a.threads + 1)

    def worker(k: int) -> None:
        rng = random.Random(k)
        clock = time.perf_counter
        for i in range(n):
            if i == n // 2:
                half.wait()
            j = rng.randrange(len(prompts))
            t = clock()
            try:
                d = sr.route(prompts[j])
            except Exception as e:
                failures[k] += 1
                if len(errors) < 5:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            lat[k, i] = clock() - t
            picks[k, i] = j
            versions[k][i] = d.router_version
            if i % a.verify_every == 0:
                sample[k].append((j, d.p_pass, d.router_version))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(a.threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    half.wait()
    ts = time.perf_counter()
    swap = sr.swap(a.bundle_b)
    swap_s = time.perf_counter() - ts
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = a.threads * n
    mixed = checked = 0
    for rows in sample:
        for j, p_pass, version in rows:
            checked += 1
            mixed += by_version[version].route(prompts[j]).p_pass != p_pass
    seen: dict[str, int] = {}
    for vs in versions:
        for v in vs:
            seen[v] = seen.get(v, 0) + 1
    us = lat[lat > 0] * 1e6
    report = {
        "threads": a.threads,
        "decisions": total,
        "prompts": len(prompts),
        "wall_s": round(wall, 2),
        "throughput_per_s": round(total / wall),
        "latency_us": {
            "p50": round(float(np.percentile(us, 50)), 1),
            "p99": round(float(np.percentile(us, 99)), 1),
            "max": round(float(us.max()), 1),
        },
        "swap": {
            "from": swap.old_version,
            "to": swap.new_version,
            "load_verify_s": round(swap_s, 3),
        },
        "decisions_per_version": seen,
        "failures": sum(failures),
        "errors": errors,
        "mixed_version_checked": checked,
        "mixed_version": mixed,
    }
    print(json.dumps(report, indent=2))
    return 0 if report["failures"] == 0 and mixed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
