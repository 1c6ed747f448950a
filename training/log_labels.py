"""The labelling rules: what an outcome-log record says about answer quality, and how much
each label may count in a fit.

Serving only writes what it observed; `feedback`, `retrain` (from logs or a table) and
`monitor`'s calibration all read labels through this module, so the rules live here once.

What is a label:
- A grade from outside the walk (a user's thumbs, a downstream check), joined by request
  id (`Grades`), is ground truth and wins over everything below.
- In a record the plain ladder walk served, the explicit checks are the eval: an answer
  that passed them (`outcome: passed`) is a 1, one that failed (`outcome: failed`) a 0.
- In a cascade record only grades are labels. The verifier's accept and reject are
  predictions, not observations; and keeping the explicit checks' failures without their
  passes (which the verifier then judged) would over-count failures. (Labelling accepted
  answers 1 and leaving rejected ones out, the old rule, taught a verifier retrained from
  logs to accept more.) A rejected answer with a grade is a label like any other: that
  is how the verifier learns from its own rejections.
- Unanswered calls and errors are never labels.
- An attempt whose model is not its tier's (a fallback reusing a name) is unlabelled;
  sticky conversation turns and records without the prompt (hashed or dropped) give no
  training row. A record whose prompt was logged as router features gives a row without
  text (`Labels.prompt` None): the training table reads its features.

Which labels a fit may use, and their weight (`apply_rule`, the label rule):
- `first-attempt` (default): the first judged attempt, whose tier depends only on the
  prompt (the router's decision) and the logged exploration coin, weighted
  1/propensity. Plus, in a cascade record that logged cascade exploration at rate e > 0,
  the next tier's label: it was observed with probability 1 when the first answer was
  rejected (escalation) and e when it was accepted (the explored next-tier call), so
  weighting it by 1/(propensity * that) makes the next tier's labels stand for every
  prompt that started a tier below, not only the hard ones. Escalation labels without
  exploration are dropped: they come only from prompts whose cheaper answer failed.
- `all-tried`: every label, weighted by the routing propensity only (more labels, biased
  towards hard prompts on the upper tiers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcomes import ModelResult, OutcomeRecord
from router.ladder import Ladder
from serving.outcome_record import (
    EXPLORE_NEXT,
    QUALITY_OUTCOMES,
    AttemptRecord,
    OutcomeLogRecord,
)

LABEL_RULES = ("first-attempt", "all-tried")

# Why `labels_of` found nothing to train on.
SKIP_STICKY = "sticky"
SKIP_PROMPT_HASHED = "prompt_hashed"
SKIP_PROMPT_DROPPED = "prompt_dropped"
SKIP_NO_LABELS = "no_labels"

GRADED, CHECK = "graded", "check"  # where a label came from (`extra["label_source"]`)


# ------------------------------------------------------------------- graded feedback
@dataclass
class GradeStats:
    """What reading the grade files found; bad lines follow the outcome-log rule."""

    lines: int = 0
    grades: int = 0
    bad_lines: int = 0
    bad_grades: int = 0
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Grades:
    """Graded feedback joined by request id: one JSON object per line,
    `{"request_id": str, "score": number in [0, 1], "tier": str (optional)}`.

    Without `tier` a grade is of the answer the caller got (the record's final tier).
    A later line for the same request and tier replaces an earlier one (a corrected
    grade). Lines that are not JSON or not such an object are skipped and counted, as in
    an outcome log. Memory: one small dict per graded request."""

    def __init__(self, by_request: Mapping[str, Mapping[str | None, float]] | None = None):
        self._by: dict[str, dict[str | None, float]] = {
            k: dict(v) for k, v in (by_request or {}).items()
        }

    def __len__(self) -> int:
        return sum(len(v) for v in self._by.values())

    def add(self, request_id: str, score: float, tier: str | None = None) -> None:
        self._by.setdefault(request_id, {})[tier] = float(score)

    @classmethod
    def load(cls, paths: Iterable[str | Path], stats: GradeStats | None = None) -> Grades:
        from serving.outcome_log import ReadStats, read_log

        st = stats if stats is not None else GradeStats()
        rs = ReadStats()
        grades = cls()
        for obj in read_log(list(paths), rs):
            st.lines += 1
            parsed = parse_grade(obj)
            if parsed is None:
                st.bad_grades += 1
                continue
            grades.add(*parsed)
            st.grades += 1
        st.bad_lines += rs.bad_lines
        st.files = list(rs.files)
        return grades

    def of(self, rec: OutcomeLogRecord, attempt: AttemptRecord) -> float | None:
        """The grade of this attempt's answer, if one was given."""
        got = self._by.get(rec.request_id)
        if not got:
            return None
        if attempt.tier in got:
            return got[attempt.tier]
        if None in got and attempt.tier == rec.final_tier and _is_final(rec, attempt):
            return got[None]
        return None


def parse_grade(obj: Any) -> tuple[str, float, str | None] | None:
    """(request_id, score, tier) of one grade object, None when it is not one."""
    if not isinstance(obj, dict):
        return None
    rid, score, tier = obj.get("request_id"), obj.get("score"), obj.get("tier")
    if not isinstance(rid, str) or not rid:
        return None
    if isinstance(score, bool):
        score = float(score)
    if not isinstance(score, int | float) or not math.isfinite(score) or not 0 <= score <= 1:
        return None
    if tier is not None and not isinstance(tier, str):
        return None
    return rid, float(score), tier


def _is_final(rec: OutcomeLogRecord, attempt: AttemptRecord) -> bool:
    """Whether `attempt` is the answer the caller got: the last answered call on the final
    tier (an explored call after it is not)."""
    for a in reversed(rec.attempts):
        if a.role == EXPLORE_NEXT or a.tier != rec.final_tier:
            continue
        return a is attempt
    return False


NO_GRADES = Grades()


# ------------------------------------------------------------------------ labels
@dataclass(frozen=True)
class Labels:
    """What the labelling rules made of one record.

    `results` maps outcomes keys to observed labels (extra: `label_source`, `role`,
    `attempt`: the attempt's index); `verdicts` lists (tier name, passed) per label;
    `unlabelled` counts attempts that are not observations on a ladder tier; `skipped`
    says why the record gives no training row (None: it does). `prompt` is None for a
    record whose prompt was logged as router features only."""

    prompt: str | None
    results: Mapping[str, ModelResult]
    verdicts: tuple[tuple[str, bool], ...] = ()
    unlabelled: int = 0
    skipped: str | None = None


def attempt_label(
    rec: OutcomeLogRecord, a: AttemptRecord, grades: Grades = NO_GRADES
) -> tuple[float, str] | None:
    """(score, source) of one attempt's answer under the rules above, or None."""
    g = grades.of(rec, a)
    if g is not None:
        return g, GRADED
    score = QUALITY_OUTCOMES.get(a.outcome)
    if score is None or rec.cascade is not None:
        return None  # not answered, or a cascade's (ungraded) verdict: a prediction
    return score, CHECK


def labels_of(rec: OutcomeLogRecord, ladder: Ladder, grades: Grades = NO_GRADES) -> Labels:
    """A record's observed labels per tier (see the module doc), or why there are none."""
    if rec.sticky:
        return Labels(None, {}, skipped=SKIP_STICKY)
    prompt = rec.prompt_text
    if prompt is None and rec.prompt_storage != "features":
        why = SKIP_PROMPT_HASHED if rec.prompt_storage == "hash" else SKIP_PROMPT_DROPPED
        return Labels(None, {}, skipped=why)
    by_name = {t.name: t for t in ladder.tiers}
    results: dict[str, ModelResult] = {}
    verdicts: list[tuple[str, bool]] = []
    unlabelled = 0
    for i, a in enumerate(rec.attempts):
        tier = by_name.get(a.tier)
        got = None if tier is None or tier.model_id != a.model_id else attempt_label(rec, a, grades)
        if tier is None or got is None or tier.outcomes_key in results:
            unlabelled += 1
            continue
        score, source = got
        extra: dict[str, Any] = {"label_source": source, "role": a.role, "attempt": i}
        if a.reason:
            extra["reason"] = a.reason
        if a.stored_answer is not None:
            extra["answer"] = a.stored_answer  # so the next verifier trains on it
        out_tok = a.usage.get("output_tokens")
        cost = a.cost_usd
        results[tier.outcomes_key] = ModelResult(
            score=score,
            output_tokens=None if out_tok is None else float(out_tok),
            input_tokens=_sum_inputs(a.usage),
            cost_usd=cost if cost is not None and math.isfinite(cost) else None,
            extra=extra,
        )
        verdicts.append((tier.name, score >= 0.5))
    skipped = None if results else SKIP_NO_LABELS
    return Labels(prompt, results, tuple(verdicts), unlabelled, skipped)


def _sum_inputs(usage: Mapping[str, int | float]) -> float | None:
    """Fresh plus cached input tokens; None when the fresh count is missing."""
    first = usage.get("input_tokens")
    if first is None or not math.isfinite(first):
        return None
    keys = ("input_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
    return sum(float(v) for k in keys if (v := usage.get(k)) is not None and math.isfinite(v))


# -------------------------------------------------------------------- label rule
def first_judged(rec: OutcomeLogRecord) -> int | None:
    """Index of the first attempt whose answer was judged (passed, failed or rejected):
    the router's (or routing exploration's) pick once unavailable tiers are skipped."""
    for i, a in enumerate(rec.attempts):
        if a.role != EXPLORE_NEXT and (a.outcome in QUALITY_OUTCOMES or a.outcome == "rejected"):
            return i
    return None


def apply_rule(
    rec: OutcomeLogRecord, results: Mapping[str, ModelResult], ladder: Ladder, rule: str
) -> tuple[dict[str, ModelResult], int]:
    """A record's labels under the label rule, each with its `ipw` (inverse-propensity
    weight), and how many labels the rule dropped."""
    if rule not in LABEL_RULES:
        raise ValueError(f"label rule must be one of {LABEL_RULES}, got {rule!r}")
    base = 1.0 / rec.propensity
    if rule == "all-tried":
        return {k: _weighted(v, base) for k, v in results.items()}, 0
    first = first_judged(rec)
    weight: dict[int, float] = {}  # attempt index -> its label's observation probability
    if first is not None:
        weight[first] = 1.0
        rate = rec.cascade_explore_rate
        names = ladder.names
        k = rec.attempts[first].tier
        if rate > 0 and k in names and names.index(k) + 1 < len(names):
            nxt = names[names.index(k) + 1]
            for i, a in enumerate(rec.attempts[first + 1 :], start=first + 1):
                if a.tier == nxt and a.role in ("escalation", EXPLORE_NEXT):
                    weight[i] = rate if a.role == EXPLORE_NEXT else 1.0
                    break
    kept: dict[str, ModelResult] = {}
    for key, r in results.items():
        q = weight.get(int(r.extra.get("attempt", -1)))
        if q is not None:
            kept[key] = _weighted(r, base / q)
    return kept, len(results) - len(kept)


def _weighted(r: ModelResult, ipw: float) -> ModelResult:
    return dataclasses.replace(r, extra={**r.extra, "ipw": ipw})


def observed(
    rec: OutcomeLogRecord,
    ladder: Ladder,
    rule: str = "first-attempt",
    grades: Grades = NO_GRADES,
    split: str = "train",
) -> OutcomeRecord | None:
    """One record's training row under the rules and the label rule (None: no label).
    The row's prompt is "" for a features-only record (its features are in the log)."""
    lab = labels_of(rec, ladder, grades)
    if lab.skipped is not None:
        return None
    results, _ = apply_rule(rec, lab.results, ladder, rule)
    if not results:
        return None
    return OutcomeRecord(rec.request_id, lab.prompt or "", results, split, extra=record_extra(rec))


def record_extra(rec: OutcomeLogRecord) -> dict[str, Any]:
    """Record-level fields a training row keeps (time, version, exploration, decision)."""
    extra: dict[str, Any] = {"source": "feedback"}
    if rec.time is not None:
        extra["time"] = rec.time
    if rec.router_version is not None:
        extra["router_version"] = rec.router_version
    if rec.exploration is not None:
        extra["exploration"] = dict(rec.exploration)
    if rec.cascade_explore is not None:
        extra["cascade_explore"] = dict(rec.cascade_explore)
    if rec.decision is not None:
        extra["decision"] = rec.decision.to_dict()
    extra["tags"] = dict(rec.tags)
    return extra


def calibration_labels(rec: OutcomeLogRecord, grades: Grades = NO_GRADES) -> list[tuple[str, int]]:
    """(tier, passed) of the record's decided attempts that carry a label: what monitor
    compares with the router's P(pass). The router chose the decided tier by P(pass),
    which leaves calibration-by-P unbiased; escalations are chosen by the tier below
    failing and are left out."""
    out = []
    for a in rec.attempts:
        if a.role != "decided":
            continue
        got = attempt_label(rec, a, grades)
        if got is not None:
            out.append((a.tier, int(got[0] >= 0.5)))
    return out
