"""Turn outcome logs into an outcomes file that `tier-router train` reads unchanged.

Labels come only from what was observed: a tier whose answer passed is a 1, a tier
whose answer failed a quality check is a 0; an answer the cascade's verifier rejected is
the verifier's prediction, not an observation, and stays unlabelled (like a tier that was
never tried). Stored answer texts travel with their labels (`results[key].answer`), so
the next verifier trains on them. A tier that was never tried (or was
throttled, down, or errored) is left out rather than guessed. Records whose prompt
was hashed or dropped cannot be trained on, and are counted as such. So are sticky
conversation turns (`"sticky": true`): they start at the previous turn's final tier,
which after an escalation is one the router did not pick, so their first verdict would
carry the escalation's bias and no exploration propensity describes how it was chosen.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcomes import ModelResult, OutcomeRecord, write_outcomes
from router.ladder import Ladder
from serving.outcome_log import ReadStats, read_log

QUALITY_OUTCOMES = {"passed": 1.0, "failed": 0.0}


@dataclass
class FeedbackStats:
    """What became of each log record; printed by `tier-router feedback`."""

    records_read: int = 0
    bad_lines: int = 0
    written: int = 0
    skipped_prompt_hashed: int = 0
    skipped_prompt_dropped: int = 0
    skipped_not_outcome_record: int = 0
    skipped_no_labels: int = 0
    skipped_duplicate: int = 0
    skipped_sticky: int = 0
    attempts_unlabelled: int = 0
    labels: dict[str, Counter[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.records_read,
            "bad_lines": self.bad_lines,
            "written": self.written,
            "skipped_prompt_hashed": self.skipped_prompt_hashed,
            "skipped_prompt_dropped": self.skipped_prompt_dropped,
            "skipped_not_outcome_record": self.skipped_not_outcome_record,
            "skipped_no_labels": self.skipped_no_labels,
            "skipped_duplicate": self.skipped_duplicate,
            "skipped_sticky": self.skipped_sticky,
            "attempts_unlabelled": self.attempts_unlabelled,
            "labels": {k: dict(v) for k, v in sorted(self.labels.items())},
        }


def record_to_outcome(
    rec: dict[str, Any], ladder: Ladder, split: str, stats: FeedbackStats
) -> OutcomeRecord | None:
    """One log record -> one outcomes record, or None (and a count saying why)."""
    if not isinstance(rec.get("request_id"), str) or not isinstance(rec.get("attempts"), list):
        stats.skipped_not_outcome_record += 1
        return None
    if rec.get("sticky") is True:  # started at an earlier turn's tier: not the router's pick
        stats.skipped_sticky += 1
        return None
    prompt = rec.get("prompt") or {}
    storage = prompt.get("storage") if isinstance(prompt, dict) else None
    if storage != "store" or not isinstance(prompt.get("text"), str):
        if storage == "hash":
            stats.skipped_prompt_hashed += 1
        else:
            stats.skipped_prompt_dropped += 1
        return None
    by_name = {t.name: t for t in ladder.tiers}
    results: dict[str, ModelResult] = {}
    for a in rec["attempts"]:
        if not isinstance(a, dict):
            stats.attempts_unlabelled += 1
            continue
        tier = by_name.get(str(a.get("tier")))
        score = QUALITY_OUTCOMES.get(str(a.get("outcome")))
        if tier is None or score is None:
            stats.attempts_unlabelled += 1
            continue
        if tier.model_id != a.get("model_id"):  # a fallback model reusing a tier name
            stats.attempts_unlabelled += 1
            continue
        usage = a.get("usage") or {}
        out_tok = usage.get("output_tokens")
        in_tok = _sum_inputs(usage)
        why: dict[str, Any] = {"reason": a["reason"]} if a.get("reason") else {}
        answer: dict[str, Any] = a["answer"] if isinstance(a.get("answer"), dict) else {}
        if answer.get("storage") == "store" and isinstance(answer.get("text"), str):
            why["answer"] = answer["text"]  # so the next verifier trains on it
        results[tier.outcomes_key] = ModelResult(
            score=score,
            output_tokens=float(out_tok) if isinstance(out_tok, int | float) else None,
            input_tokens=in_tok,
            cost_usd=float(a["cost_usd"]) if _num(a.get("cost_usd")) else None,
            extra=why,
        )
        stats.labels.setdefault(tier.name, Counter())["pass" if score else "fail"] += 1
    if not results:
        stats.skipped_no_labels += 1
        return None
    extra: dict[str, Any] = {"source": "feedback"}  # record-level fields, incl. propensity
    for k in ("time", "router_version", "exploration", "decision", "tags"):
        if rec.get(k) is not None:
            extra[k] = rec[k]
    return OutcomeRecord(
        id=rec["request_id"], prompt=prompt["text"], results=results, split=split, extra=extra
    )


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _sum_inputs(usage: dict[str, Any]) -> float | None:
    keys = ("input_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
    if not _num(usage.get("input_tokens")):
        return None
    total = 0.0
    for k in keys:
        v = usage.get(k)
        if isinstance(v, int | float) and math.isfinite(v):
            total += float(v)
    return total


def iter_feedback(
    logs: Iterable[str | Path], ladder: Ladder, split: str, stats: FeedbackStats
) -> Iterator[OutcomeRecord]:
    seen: set[str] = set()
    read_stats = ReadStats()
    for rec in read_log(logs, read_stats):
        stats.records_read += 1
        rid = rec.get("request_id")
        if isinstance(rid, str) and rid in seen:  # the same batch read from two places
            stats.skipped_duplicate += 1
            continue
        if isinstance(rid, str):
            seen.add(rid)
        out = record_to_outcome(rec, ladder, split, stats)
        if out is not None:
            stats.written += 1
            yield out
    stats.bad_lines = read_stats.bad_lines


def build_outcomes(
    logs: Iterable[str | Path], ladder: Ladder, out: str | Path, split: str = "train"
) -> FeedbackStats:
    """Write the outcomes file for `logs`; returns the counts."""
    stats = FeedbackStats()
    write_outcomes(out, iter_feedback(logs, ladder, split, stats))
    return stats
