"""Turn outcome logs (and graded feedback) into an outcomes file that `train` reads unchanged.

The labels are training/log_labels.py's rules: a grade joined by request id is ground
truth; an explicit check's failure is a 0; an explicit pass is a 1 only where the plain
ladder walk served (in a cascade the verifier's accept and reject are predictions and stay
unlabelled unless graded). Stored answer texts travel with their labels
(`results[key].answer`), so the next verifier trains on them. A tier that was never tried
(or was throttled, down, or errored) is left out rather than guessed. Records whose
prompt was hashed or dropped, sticky conversation turns, and records whose prompt was
logged only as router features (an outcomes file holds prompt text; `retrain --log` and
`table` read such records) give no row here, and are counted.
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
from serving.outcome_record import NotAnOutcomeRecord, OutcomeLogRecord
from serving.seen_ids import SeenIds
from training.log_labels import (
    GRADED,
    NO_GRADES,
    SKIP_NO_LABELS,
    SKIP_PROMPT_DROPPED,
    SKIP_PROMPT_HASHED,
    SKIP_STICKY,
    Grades,
    labels_of,
    record_extra,
)


@dataclass
class FeedbackStats:
    """What became of each log record; printed by `tier-router feedback`."""

    records_read: int = 0
    bad_lines: int = 0
    written: int = 0
    skipped_prompt_hashed: int = 0
    skipped_prompt_dropped: int = 0
    skipped_prompt_features: int = 0
    skipped_not_outcome_record: int = 0
    skipped_no_labels: int = 0
    skipped_duplicate: int = 0
    skipped_sticky: int = 0
    attempts_unlabelled: int = 0
    graded_labels: int = 0
    labels: dict[str, Counter[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every count in field order, then the labels per tier as plain sorted dicts."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["labels"] = {k: dict(v) for k, v in sorted(self.labels.items())}
        return d


def record_to_outcome(
    rec: Mapping[str, Any] | OutcomeLogRecord,
    ladder: Ladder,
    split: str,
    stats: FeedbackStats,
    grades: Grades = NO_GRADES,
    *,
    features_ok: bool = False,
) -> OutcomeRecord | None:
    """One log record -> one outcomes record, or None (and a count saying why). With
    `features_ok` a features-only record gives a row with an empty prompt."""
    if not isinstance(rec, OutcomeLogRecord):
        try:
            rec = OutcomeLogRecord.from_dict(rec)
        except NotAnOutcomeRecord:
            stats.skipped_not_outcome_record += 1
            return None
    lab = labels_of(rec, ladder, grades)
    stats.attempts_unlabelled += lab.unlabelled
    if lab.skipped is not None:
        counter = _SKIP_COUNTERS.get(lab.skipped, "skipped_no_labels")
        setattr(stats, counter, getattr(stats, counter) + 1)
        return None
    if lab.prompt is None and not features_ok:
        stats.skipped_prompt_features += 1
        return None
    for tier, passed in lab.verdicts:
        stats.labels.setdefault(tier, Counter())["pass" if passed else "fail"] += 1
    graded = (r.extra.get("label_source") == GRADED for r in lab.results.values())
    stats.graded_labels += sum(graded)
    return OutcomeRecord(
        id=rec.request_id,
        prompt=lab.prompt or "",
        results=dict(lab.results),
        split=split,
        extra=record_extra(rec),
    )


_SKIP_COUNTERS = {
    SKIP_STICKY: "skipped_sticky",
    SKIP_PROMPT_HASHED: "skipped_prompt_hashed",
    SKIP_PROMPT_DROPPED: "skipped_prompt_dropped",
    SKIP_NO_LABELS: "skipped_no_labels",
}


def iter_labelled(
    logs: Iterable[str | Path],
    ladder: Ladder,
    split: str,
    stats: FeedbackStats,
    grades: Grades = NO_GRADES,
    *,
    features_ok: bool = False,
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
        out = record_to_outcome(rec, ladder, split, stats, grades, features_ok=features_ok)
        if out is not None:
            yield rec, out
    stats.bad_lines = read_stats.bad_lines


def iter_feedback(
    logs: Iterable[str | Path],
    ladder: Ladder,
    split: str,
    stats: FeedbackStats,
    grades: Grades = NO_GRADES,
) -> Iterator[OutcomeRecord]:
    """Outcomes records of the logs' labelled requests (counted in `stats.written`)."""
    for _, out in iter_labelled(logs, ladder, split, stats, grades):
        stats.written += 1
        yield out


def build_outcomes(
    logs: Iterable[str | Path],
    ladder: Ladder,
    out: str | Path,
    split: str = "train",
    grades: Grades = NO_GRADES,
) -> FeedbackStats:
    """Write the outcomes file for `logs`; returns the counts."""
    stats = FeedbackStats()
    write_outcomes(out, iter_feedback(logs, ladder, split, stats, grades))
    return stats
