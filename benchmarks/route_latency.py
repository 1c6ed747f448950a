"""Benchmark Router.route(): single thread, real prompts, text in and decision out.

    python benchmarks/route_latency.py --bundle bundles/mmlu_pro [--prompts N]

Prints median and p99 microseconds per call over prompts from the test splits of the
public outcomes files (mixed), after a warm-up pass. `python_ref_us` times a fixed
pure-Python loop (sum(range(1000))) in the same process, to compare machines by;
`route_path` says how route() scored (TIER_ROUTER_PURE_PYTHON=1 turns off the compiled path).
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from outcomes import iter_outcomes  # noqa: E402
from router import Router  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = ("mmlu_pro", "routerbench_subset", "llmrouter_dcrouter")


def real_prompts(n: int) -> list[str]:
    per = n // len(FILES) + 1
    out: list[str] = []
    for name in FILES:
        for i, rec in enumerate(iter_outcomes(DATA / f"{name}.jsonl.gz", "test")):
            if i >= per:
                break
            out.append(rec.prompt)
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    router = Router.load(a.bundle, threads=1)
    prompts = real_prompts(a.prompts)
    for p in prompts:  # warm-up: caches, allocator, ORT kernels
        router.route(p)
    times = []
    for _ in range(a.repeats):
        for p in prompts:
            t = time.perf_counter_ns()
            router.route(p)
            times.append(time.perf_counter_ns() - t)
    us = np.array(times) / 1e3
    chars = np.array([len(p) for p in prompts])
    print(
        json.dumps(
            {
                "bundle": a.bundle,
                "featurizer": router.featurizer.config.kind,
                "route_path": router.route_path,
                "calls": len(us),
                "prompt_chars_median": int(np.median(chars)),
                "p50_us": round(float(np.median(us)), 1),
                "p90_us": round(float(np.percentile(us, 90)), 1),
                "p99_us": round(float(np.percentile(us, 99)), 1),
                "python_ref_us": round(
                    min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6, 1
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
