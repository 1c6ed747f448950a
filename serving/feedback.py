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
The rules themselves are `serving.outcome_record.labels_of`; this module counts and writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from outcomes import OutcomeRecord, write_outcomes
from router.ladder import Ladder
from serving.outcome_log import ReadStats, read_log
from serving.outcome_record import (
    SKIP_NO_LABELS,
    SKIP_PROMPT_DROPPED,
    SKIP_PROMPT_HASHED,
    SKIP_STICKY,
    NotAnOutcomeRecord,
    OutcomeLogRecord,
    labels_of,
)
from serving.seen_ids import SeenIds


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
        """Every count in field order, then the labels per tier as plain sorted dicts."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["labels"] = {k: dict(v) for k, v in sorted(self.labels.items())}
        return d


def record_to_outcome(
    rec: Mapping[str, Any] | OutcomeLogRecord, ladder: Ladder, split: str, stats: FeedbackStats
) -> OutcomeRecord | None:
    """One log record -> one outcomes record, or None (and a count saying why)."""
    if not isinstance(rec, OutcomeLogRecord):
        try:
            rec = OutcomeLogRecord.from_dict(rec)
        except NotAnOutcomeRecord:
            stats.skipped_not_outcome_record += 1
            return None
    lab = labels_of(rec, ladder)
    stats.attempts_unlabelled += lab.unlabelled
    for tier, passed in lab.verdicts:
        stats.labels.setdefault(tier, Counter())["pass" if passed else "fail"] += 1
    if lab.skipped is not None or lab.prompt is None:
        counter = _SKIP_COUNTERS.get(lab.skipped or SKIP_NO_LABELS, "skipped_no_labels")
        setattr(stats, counter, getattr(stats, counter) + 1)
        return None
    extra: dict[str, Any] = {"source": "feedback"}  # record-level fields, incl. propensity
    if rec.time is not None:
        extra["time"] = rec.time
    if rec.router_version is not None:
        extra["router_version"] = rec.router_version
    if rec.exploration is not None:
        extra["exploration"] = dict(rec.exploration)
    if rec.decision is not None:
        extra["decision"] = rec.decision.to_dict()
    extra["tags"] = dict(rec.tags)
    return OutcomeRecord(
        id=rec.request_id, prompt=lab.prompt, results=dict(lab.results), split=split, extra=extra
    )


_SKIP_COUNTERS = {
    SKIP_STICKY: "skipped_sticky",
    SKIP_PROMPT_HASHED: "skipped_prompt_hashed",
    SKIP_PROMPT_DROPPED: "skipped_prompt_dropped",
    SKIP_NO_LABELS: "skipped_no_labels",
}


def iter_labelled(
    logs: Iterable[str | Path], ladder: Ladder, split: str, stats: FeedbackStats
) -> Iterator[tuple[OutcomeLogRecord, OutcomeRecord]]:
    """The one read loop: each distinct request's log record with its outcomes record.

    Streams: `logs` are files or `s3://bucket/prefix` locations, read a block at a time
    (serving/log_source.py); the only state that grows is 8 bytes per request id
    (serving/seen_ids.py). A request id seen before (the same batch read from two
    places) is skipped."""
    seen = SeenIds()
    read_stats = ReadStats()
    for raw in read_log(logs, read_stats):
        stats.records_read += 1
        rid = raw.get("request_id")
        if isinstance(rid, str) and not seen.add(rid):
            stats.skipped_duplicate += 1
            continue
        try:
            rec = OutcomeLogRecord.from_dict(raw)
        except NotAnOutcomeRecord:
            stats.skipped_not_outcome_record += 1
            continue
        out = record_to_outcome(rec, ladder, split, stats)
        if out is not None:
            yield rec, out
    stats.bad_lines = read_stats.bad_lines


def iter_feedback(
    logs: Iterable[str | Path], ladder: Ladder, split: str, stats: FeedbackStats
) -> Iterator[OutcomeRecord]:
    """Outcomes records of the logs' labelled requests (counted in `stats.written`)."""
    for _, out in iter_labelled(logs, ladder, split, stats):
        stats.written += 1
        yield out


def build_outcomes(
    logs: Iterable[str | Path], ladder: Ladder, out: str | Path, split: str = "train"
) -> FeedbackStats:
    """Write the outcomes file for `logs`; returns the counts."""
    stats = FeedbackStats()
    write_outcomes(out, iter_feedback(logs, ladder, split, stats))
    return stats
