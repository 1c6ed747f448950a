"""A downstream check for the offline loop: grades of logged answers from the recorded scores.

In production a service's own grader (its tests, a user's thumbs, a reviewer) sends back
how an answer did, joined to the outcome log by request id. Offline, the answers the local
server returned are the outcomes file's recorded ones, so their recorded scores are those
grades. The demo, the loop benchmark and the tests write them with this one function.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from outcomes import OutcomeRecord
from router.ladder import Ladder

# Attempt outcomes that carry an answer (the second opinion's "answered" is no candidate).
_ANSWERED = ("passed", "failed", "rejected")


def recorded_grades(
    log_records: Iterable[Mapping[str, Any]],
    sent: Mapping[str, OutcomeRecord],
    ladder: Ladder,
) -> Iterator[dict[str, Any]]:
    """`{"request_id", "tier", "score"}` for every answered ladder-tier call of the logged
    requests, from the recorded score of the prompt each request sent (`sent`: request id
    -> its outcomes record). Requests not in `sent` are not graded."""
    tiers = {t.model_id: t for t in ladder.tiers}
    for rec in log_records:
        rid = rec.get("request_id")
        src = sent.get(rid) if isinstance(rid, str) else None
        if src is None:
            continue
        seen: set[str] = set()
        for a in rec.get("attempts") or []:
            tier = tiers.get(a.get("model_id"))
            if tier is None or a.get("outcome") not in _ANSWERED or tier.name in seen:
                continue
            got = src.results.get(tier.outcomes_key)
            if got is not None:
                seen.add(tier.name)
                yield {"request_id": rid, "tier": tier.name, "score": float(got.score)}


def write_grades(path: Path, grades: Iterable[Mapping[str, Any]]) -> int:
    """Write grades as JSONL; returns how many."""
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for g in grades:
            f.write(json.dumps(g) + "\n")
            n += 1
    return n
