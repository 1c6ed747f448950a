"""Write N synthetic outcome-log records (the serving log's format) for scale benchmarks.

    python benchmarks/make_logs.py --records 1000000 --out /tmp/logs/1m.jsonl.gz \
        [--tiers data/ladders/mmlu_pro.toml] [--duplicates 0.01] [--seed 0]

Each record is what `TieredClient` logs for one request on the ladder: a stored prompt
(varied words, 40-400 characters), the router's decision with per-tier P(pass), an
exploration coin with its propensity, a decided attempt that passed or failed, and for a
failed one an escalation to the next tier; times advance ~8.6 ms per record (ten million
requests a day). A share of records (`--duplicates`) repeats an earlier request id, as
when one batch is read from two places. `.gz` in --out writes gzip. The generator holds
one record at a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import random
import sys
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.ladder import Ladder
from serving.outcome_record import SCHEMA

_TEXT = (
    "compare explain the fiscal policy of japan germany derive prove integral code python "
    "function list sort summarize article translate french answer question which option "
    "best describes a b c d why how many apples train leaves station speed hours"
)
WORDS = _TEXT.split()


def record(i: int, rng: random.Random, ladder: Ladder, t0: dt.datetime) -> dict[str, Any]:
    tiers = ladder.tiers
    words = rng.choices(WORDS, k=rng.randint(6, 60))
    prompt = " ".join(words)
    p = sorted(round(rng.random(), 4) for _ in tiers)
    decided = rng.randrange(len(tiers))
    explored = decided > 0 and rng.random() < 0.05
    start = decided - 1 if explored else decided
    attempts = []
    tier_i, cost = start, 0.0
    while True:
        t = tiers[tier_i]
        passed = rng.random() < 0.5 + 0.15 * tier_i
        c = round(rng.uniform(1e-5, 1e-3) * (tier_i + 1), 8)
        cost += c
        attempts.append(
            {
                "tier": t.name,
                "model_id": t.model_id,
                "role": "decided" if tier_i == start else "escalation",
                "outcome": "passed" if passed else "failed",
                "reason": None if passed else "self-check: no final answer",
                "stop_reason": "end_turn",
                "usage": {"input_tokens": len(words) * 2, "output_tokens": rng.randint(5, 900)},
                "cost_usd": c,
                "latency_ms": round(rng.lognormvariate(6.5, 0.6), 3),
            }
        )
        if passed or tier_i == len(tiers) - 1:
            break
        tier_i += 1
    return {
        "schema": SCHEMA,
        "request_id": f"req-{i:012d}",
        "time": (t0 + dt.timedelta(milliseconds=8.64 * i)).isoformat(),
        "router_version": "synthetic-1",
        "decision": {
            "tier": tiers[decided].name,
            "tier_index": decided,
            "p_pass": {t.name: x for t, x in zip(tiers, p, strict=True)},
            "reason": "p >= threshold",
        },
        "route_error": None,
        "start_tier": tiers[start].name,
        "conversation_id": None,
        "sticky": False,
        "turns": None,
        "exploration": {
            "rate": 0.05,
            "explored": explored,
            "propensity": 0.05 if explored else (0.95 if decided > 0 else 1.0),
            "decided_tier": tiers[decided].name,
        },
        "attempts": attempts,
        "final_tier": attempts[-1]["tier"],
        "final_model_id": attempts[-1]["model_id"],
        "final_stop_reason": "end_turn",
        "ok": attempts[-1]["outcome"] == "passed",
        "failure_reason": None,
        "escalations": len(attempts) - 1,
        "stopped_by_max_escalations": False,
        "cascade": None,
        "usage": {"input_tokens": len(words) * 2},
        "cost_usd": round(cost, 8),
        "latency_ms": round(sum(a["latency_ms"] for a in attempts), 3),
        "tags": {"app": "bench"},
        "prompt": {"storage": "store", "text": prompt},
    }


def write_logs(
    out: Path,
    n: int,
    ladder: Ladder,
    duplicates: float = 0.01,
    seed: int = 0,
    variants: int = 20_000,
    first_id: int = 0,
) -> int:
    """Write `n` records to `out` (gzip when it ends in .gz); returns the bytes written.

    `variants` distinct records are made once as JSON templates; each written record is one
    of them with its own request id and time (fast enough for millions of records)."""
    rng = random.Random(seed)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    templates = []
    for v in range(variants):
        rec = record(0, random.Random(seed * 1_000_003 + v), ladder, t0)
        rec["request_id"], rec["time"] = "@RID@", "@TIME@"
        head, mid, tail = json.dumps(rec, separators=(",", ":")).replace("@RID@", "\x00").replace(
            "@TIME@", "\x00").split("\x00")  # fmt: skip
        templates.append((head, mid, tail + "\n"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fh: IO[str] = (
        gzip.open(out, "wt", encoding="utf-8", compresslevel=1)  # noqa: SIM115 - with below
        if out.suffix == ".gz"
        else out.open("w", encoding="utf-8")
    )
    step = dt.timedelta(milliseconds=8.64)
    with fh:
        for k in range(n):
            i = rng.randrange(k) if k and rng.random() < duplicates else k
            head, mid, tail = templates[i % variants]
            i += first_id
            stamp = (t0 + step * i).isoformat()
            fh.write(f"{head}req-{i:012d}{mid}{stamp}{tail}")
    return out.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiers", type=Path, default=Path("data/ladders/mmlu_pro.toml"))
    ap.add_argument("--duplicates", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    size = write_logs(a.out, a.records, Ladder.load(a.tiers), a.duplicates, a.seed)
    print(json.dumps({"out": str(a.out), "records": a.records, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
