"""Benchmark Router.route(): single thread, real prompts, text in and decision out.

    python benchmarks/route_latency.py --bundle bundles/mmlu_pro [--prompts N]

Prints median and p99 microseconds per call over prompts from the test splits of the
public outcomes files (mixed), after a warm-up pass. `python_ref_us` times a fixed
pure-Python loop (sum(range(1000))) in the same process, to compare machines by;
`route_path` says how route() scored (TIER_ROUTER_PURE_PYTHON=1 turns off the compiled path).
With `--reference`, the same prompts are timed again in a child process on the pure-Python
kernels, in the same run, and `ratio_p50` / `ratio_p99` compare the two (robust to a noisy
machine, where absolute microseconds are not).
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from outcomes import iter_outcomes  # noqa: E402
from router import Router  # noqa: E402

DATA = Path(
    os.environ.get(
        "TIER_ROUTER_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)
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
    ap.add_argument("--reference", action="store_true", help="also time the pure-Python path")
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
    result = {
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
    if a.reference and router.route_path == "compiled":
        ref = _pure_python_run(a)
        result["reference"] = ref
        result["ratio_p50"] = round(ref["p50_us"] / result["p50_us"], 2)
        result["ratio_p99"] = round(ref["p99_us"] / result["p99_us"], 2)
    print(json.dumps(result))


def _pure_python_run(a: argparse.Namespace) -> dict:
    """The same benchmark in a child process with TIER_ROUTER_PURE_PYTHON=1."""
    env = {**os.environ, "TIER_ROUTER_PURE_PYTHON": "1"}
    cmd = [sys.executable, __file__, "--bundle", a.bundle, "--prompts", str(a.prompts),
           "--repeats", str(a.repeats)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    ref: dict = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: ref[k] for k in ("route_path", "p50_us", "p90_us", "p99_us")}


if __name__ == "__main__":
    main()
