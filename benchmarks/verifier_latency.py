"""Benchmark the answer verifier: single thread, real recorded answers, text in, P(pass) out.

    python benchmarks/verifier_latency.py --bundle B --outcomes F [--answers N]

B must be a bundle trained on answers (it carries verifier.onnx); F an outcomes file with
answer texts (e.g. ../shared/data/mmlu_pro_answers.jsonl.gz). For each of N answers of the
test split (every tier's, round robin) it times what the serving path does per answer:
`read` (hand features, final-answer extraction, static embedding) and `p_pass` (one dot
product), the latter with the second opinion's answer as context where there is one.
Prints medians and p99 in microseconds, and the answers' median length.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from outcomes import iter_outcomes  # noqa: E402
from router import Router  # noqa: E402
from router.answer_features import prompt_options  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--outcomes", type=Path, required=True)
    ap.add_argument("--answers", type=int, default=2000)
    a = ap.parse_args()
    router = Router.load(a.bundle)
    if router.verifier is None:
        raise SystemExit(f"{a.bundle}: no verifier in this bundle (train on answers)")
    v = router.verifier
    keys = [t.outcomes_key for t in router.ladder.tiers]
    second = router.ladder.second_opinion
    work = []
    for rec in iter_outcomes(a.outcomes, "test"):
        t = len(work) % len(keys)
        text = rec.results.get(keys[t])
        s = rec.results.get(second.outcomes_key) if second else None
        if text is None or not isinstance(text.extra.get("answer"), str):
            continue
        s_text = s.extra.get("answer") if s is not None else None
        work.append((rec.prompt, t, text.extra["answer"], s_text))
        if len(work) >= a.answers:
            break
    p_router = router.p_pass_batch([w[0] for w in work])
    for prompt, _, text, _ in work[:200]:  # warm-up: the embedder's chunk cache
        v.read(prompt, text, prompt_options(prompt))
    read_us, score_us, second_us = [], [], []
    for (prompt, t, text, s_text), p in zip(work, p_router.tolist(), strict=True):
        opts = prompt_options(prompt)
        t0 = time.perf_counter()
        ra = v.read(prompt, text, opts)
        t1 = time.perf_counter()
        v.p_pass(t, ra, p[t])
        t2 = time.perf_counter()
        read_us.append((t1 - t0) * 1e6)
        score_us.append((t2 - t1) * 1e6)
        if s_text is not None:
            rs = v.read(prompt, s_text, opts)
            t3 = time.perf_counter()
            v.p_pass(t, ra, p[t], rs)
            second_us.append((time.perf_counter() - t3) * 1e6)
    total = np.array(read_us) + np.array(score_us)
    out = {
        "answers": len(work),
        "answer_chars_median": int(np.median([len(w[2]) for w in work])),
        "read_p50_us": round(float(np.median(read_us)), 1),
        "p_pass_p50_us": round(float(np.median(score_us)), 1),
        "per_answer_p50_us": round(float(np.median(total)), 1),
        "per_answer_p99_us": round(float(np.percentile(total, 99)), 1),
        "p_pass_with_second_p50_us": round(float(np.median(second_us)), 1) if second_us else None,
        "route_path": router.route_path,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
