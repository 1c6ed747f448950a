"""Retrain from serving logs: base outcomes + logged labels -> challenger, judged vs champion.

Serving only observes the tiers it tried, and which tiers it tried depends on the
router and on earlier outcomes, so logged labels are not a random sample. What a record's
labels are, and the label rule with its inverse-propensity weights, are
training/log_labels.py's (the same rules `feedback`, `table` and `monitor` use):

- Untried tiers stay unknown (NaN, masked by the model), never guessed.
- A cascade's accept/reject is a prediction: such answers are labels only when graded
  feedback (`--grades`, joined by request id) says how they did.
- `first-attempt` (default) keeps the first judged attempt (weight 1/propensity) and, when
  the client explored the cascade, the next tier's label weighted by 1/P(observed);
  `all-tried` keeps every label (biased towards hard prompts on the upper tiers).

The fit weights each label by its `ipw` (training/labels.py, training/model.py).
Feedback prompts that also appear in the evaluation split are dropped so the held-out
comparison stays held out.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcomes import OutcomeRecord, iter_outcomes, write_outcomes
from router import Router
from router.bundle import BundleError, sha256_file
from router.ladder import Ladder
from training.compare import (
    DEFAULT_MAX_QUALITY_DROP,
    EvalData,
    Verdict,
    VersionEval,
    evaluate_router,
    evaluate_version,
    judge,
)
from training.ladder_check import check_ladder_against
from training.log_labels import LABEL_RULES, Grades, GradeStats, apply_rule
from training.pipeline import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainConfig:
    base: Path
    feedback: tuple[Path, ...]
    tiers: Path
    out: Path
    eval_split: str = "test"
    label_rule: str = "first-attempt"
    table: str | None = None  # a training table (file, directory or s3:// prefix) instead of logs
    table_rows: int = 500_000  # the table's sample budget (training/table_fit.py)
    grades: tuple[str | Path, ...] = ()  # graded feedback, joined by request id (log_labels)

    def __post_init__(self) -> None:
        if not self.base.is_file():
            raise ValueError(f"--outcomes: no such file: {self.base}")
        if self.table is not None and self.feedback:
            raise ValueError("give --log outcome logs or a --table, not both")
        if self.table_rows < 20:
            raise ValueError(f"--table-rows must be >= 20, got {self.table_rows}")
        if not self.feedback and self.table is None:
            raise ValueError("--log: give at least one outcome log (or --table)")
        for f in self.feedback:
            if not f.is_file():
                raise ValueError(f"--log: no such file: {f}")
        for g in self.grades:
            if not str(g).startswith("s3://") and not Path(g).is_file():
                raise ValueError(f"--grades: no such file: {g}")
        if not self.tiers.is_file():
            raise ValueError(f"--ladder: no such file: {self.tiers}")
        if self.label_rule not in LABEL_RULES:
            raise ValueError(f"--label-rule must be one of {LABEL_RULES}, got {self.label_rule!r}")


@dataclass
class MergeStats:
    base_rows: int = 0
    feedback_records: int = 0
    feedback_rows: int = 0
    dropped_escalation_labels: int = 0
    dropped_eval_overlap: int = 0
    dropped_by_label_rule: int = 0  # records left with no label under the rule
    explored_rows: int = 0
    labels_per_tier: dict[str, dict[str, int]] = field(default_factory=dict)
    conversion: dict[str, Any] = field(default_factory=dict)
    grades: GradeStats = field(default_factory=GradeStats)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dropped_per_reason": self.dropped_per_reason()}

    def dropped_per_reason(self) -> dict[str, int]:
        """Log records that gave no training row, by why (the conversion's and the merge's)."""
        cv = self.conversion
        reasons = {
            "unparseable_line": cv.get("bad_lines", 0),
            "not_outcome_record": cv.get("skipped_not_outcome_record", 0),
            "duplicate_request_id": cv.get("skipped_duplicate", 0),
            "prompt_hashed": cv.get("skipped_prompt_hashed", 0),
            "prompt_dropped": cv.get("skipped_prompt_dropped", 0),
            "sticky_turn": cv.get("skipped_sticky", 0),
            "no_quality_verdict": cv.get("skipped_no_labels", 0),
            "in_eval_split": self.dropped_eval_overlap,
            "label_rule": self.dropped_by_label_rule,
        }
        return {k: int(v) for k, v in reasons.items() if v}


# Why a reason emptied the feedback, for the one-line error (the biggest count is the cause).
_CAUSES = {
    "unparseable_line": "the log lines are not JSON (a torn or foreign file?)",
    "not_outcome_record": "the records are not tier-router outcome records",
    "duplicate_request_id": "every record repeats a request id already read",
    "prompt_hashed": "the prompts were logged as hashes (prompt_storage=hash); log them "
    "with prompt_storage=store to retrain on them",
    "prompt_dropped": "the prompts were not logged (prompt_storage=drop)",
    "sticky_turn": "the records are sticky conversation turns, which start at an earlier "
    "turn's final tier and so are not labels of the router's decision",
    "no_quality_verdict": "no attempt on a ladder tier got a label: in a cascade the "
    "verifier's accept and reject are predictions, labels only with graded feedback "
    "(--grades, joined by request id); otherwise all calls were unavailable or errored, or "
    "the records are another ladder's model ids",
    "label_rule": "the label rule kept no attempt",
}


def no_labels_message(cfg: RetrainConfig, st: MergeStats) -> str:
    """What emptied the feedback: the counts dropped per reason and the main cause."""
    read = int(st.conversion.get("records_read", 0))
    per = st.dropped_per_reason()
    files = [str(f) for f in cfg.feedback]
    head = f"--log: no usable labels in {files}: {read} records read"
    if read == 0 and not per:
        return f"{head}; the logs hold no records"
    top = max(per, key=lambda k: per[k]) if per else None
    if top == "in_eval_split":
        n = st.feedback_records
        cause = (
            f"{'all ' if per[top] == n else ''}{per[top]} labelled records are prompts of the "
            f"evaluation split {cfg.eval_split!r} of {cfg.base}, which are kept out so the "
            "champion comparison stays held out (log other prompts, or name another "
            "held-out split with --split)"
        )
    elif top is not None:
        cause = _CAUSES[top]
    else:
        cause = "no record produced a label"
    counts = ", ".join(f"{k}: {v}" for k, v in per.items()) or "none"
    return f"{head}, {st.feedback_records} labelled; dropped per reason: {counts}; cause: {cause}"


def feedback_records(
    logs: Iterable[Path],
    ladder: Ladder,
    rule: str,
    exclude_prompts: set[str],
    st: MergeStats,
    grades: Grades | None = None,
) -> Iterator[OutcomeRecord]:
    """Outcome-log records -> training records (split 'train') under the label rule."""
    from training.feedback import FeedbackStats, iter_labelled

    fs = FeedbackStats()
    for raw, rec in iter_labelled(list(logs), ladder, "train", fs, grades or Grades()):
        st.feedback_records += 1
        if rec.prompt in exclude_prompts:
            st.dropped_eval_overlap += 1
            continue
        results, dropped = apply_rule(raw, rec.results, ladder, rule)
        st.dropped_escalation_labels += dropped
        if not results:
            st.dropped_by_label_rule += 1
            continue
        st.explored_rows += int(raw.explored)
        for t in ladder.tiers:
            if t.outcomes_key in results:
                c = st.labels_per_tier.setdefault(t.name, {"pass": 0, "fail": 0})
                c["pass" if results[t.outcomes_key].passed else "fail"] += 1
        st.feedback_rows += 1
        yield dataclasses.replace(
            rec, id=f"feedback-{rec.id}", results=results, extra={**rec.extra, "label_rule": rule}
        )
    st.conversion = fs.to_dict()


def merge(cfg: RetrainConfig, dest: Path) -> MergeStats:
    """Write base rows (all splits, unchanged) + feedback rows (split 'train') to `dest`."""
    ladder = Ladder.load(cfg.tiers)
    check_ladder_against(ladder, cfg.tiers, iter_outcomes(cfg.base), cfg.base)
    held_out = {r.prompt for r in iter_outcomes(cfg.base, cfg.eval_split)}
    st = MergeStats()

    def rows() -> Iterator[OutcomeRecord]:
        for r in iter_outcomes(cfg.base):
            st.base_rows += 1
            yield r
        grades = Grades.load(cfg.grades, st.grades) if cfg.grades else None
        yield from feedback_records(cfg.feedback, ladder, cfg.label_rule, held_out, st, grades)

    dest.parent.mkdir(parents=True, exist_ok=True)
    write_outcomes(dest, rows())
    if st.feedback_rows == 0 and not st.conversion.get("skipped_prompt_features"):
        raise ValueError(no_labels_message(cfg, st))  # (features rows: retrain's other path)
    log.info("merged %d base rows + %d feedback rows into %s", st.base_rows, st.feedback_rows, dest)
    return st


@dataclass(frozen=True)
class RetrainResult:
    merged: Path
    stats: MergeStats
    summary: dict[str, Any]
    challenger: VersionEval
    champion: VersionEval | None
    verdict: Verdict | None
    # Why the champion was not compared, when there is one this tier-router cannot read
    # (a bundle of an older format, or one damaged in the registry's store).
    champion_error: str | None = None


def retrain(
    cfg: RetrainConfig,
    train_cfg: TrainConfig,
    registered_model: str | None,
    max_quality_drop: float = DEFAULT_MAX_QUALITY_DROP,
    registered_note: str | None = None,
) -> RetrainResult:
    """Merge, train and register the challenger, then score it and the champion on the
    base file's evaluation split (the same rows for both)."""
    from training.registry import RegistryError, client, signature_of, version_ladder
    from training.registry import champion as champion_of
    from training.runs import train_evaluate_log

    prepared = None
    if cfg.table is not None:  # the base file's train split + a sample of the table
        from training.table_fit import table_training_data

        merged = cfg.base
        prepared, stats = table_training_data(cfg, train_cfg)
    else:
        merged = cfg.out.parent / f"{cfg.out.name}-outcomes.jsonl.gz"
        stats = merge(cfg, merged)
        if stats.conversion.get("skipped_prompt_features"):
            # Records with the router's features instead of text (the default log): they
            # cannot go into an outcomes file, so the whole fit goes the table way.
            from training.table_fit import log_training_data

            log.info(
                "%d records carry prompt features, not text: fitting from log rows",
                stats.conversion["skipped_prompt_features"],
            )
            merged.unlink(missing_ok=True)
            merged, first = cfg.base, stats
            prepared, stats = log_training_data(cfg, train_cfg)
            stats.conversion = {**first.conversion, **stats.conversion}
            stats.grades = first.grades
    summary = train_evaluate_log(
        dataclasses.replace(train_cfg, outcomes=merged, tiers=cfg.tiers, out=cfg.out),
        prepared=prepared,
        eval_split=cfg.eval_split,
        registered_model=registered_model,
        registered_note=registered_note,
        extra_params={
            "retrain.base_file": str(cfg.base),
            "retrain.base_sha256": sha256_file(cfg.base),
            "retrain.feedback_files": ",".join(str(f) for f in cfg.feedback),
            "retrain.feedback_rows": stats.feedback_rows,
            "retrain.dropped_escalation_labels": stats.dropped_escalation_labels,
            "retrain.dropped_eval_overlap": stats.dropped_eval_overlap,
            "retrain.label_rule": cfg.label_rule,
            "retrain.grades_files": ",".join(str(g) for g in cfg.grades),
            **({"retrain.table": cfg.table} if cfg.table is not None else {}),
        },
        extra_tags={"kind": "retrain"},
    )
    data = EvalData(cfg.base, cfg.eval_split)
    challenger = evaluate_router(Router.load(cfg.out), data, "challenger")
    version = (summary.get("mlflow") or {}).get("registered_version")
    if version:
        challenger = dataclasses.replace(
            challenger, label=f"challenger v{version}", version=str(version)
        )
    champ_eval = verdict = champion_error = None
    if registered_model:
        c = client()
        mv = champion_of(c, registered_model)
        theirs = None if mv is None else version_ladder(c, mv)
        ours = signature_of(Ladder.load(cfg.tiers))
        if mv is not None and theirs is not None and theirs != ours:
            champion_error = (
                f"champion v{mv.version} of {registered_model} routes over another ladder "
                f"({theirs}) than this challenger ({ours}): not comparable"
            )
            log.warning("%s", champion_error)
        elif mv is not None:
            try:
                champ_eval = dataclasses.replace(
                    evaluate_version(c, mv, data), label=f"champion v{mv.version}"
                )
            except (BundleError, RegistryError) as e:  # e.g. an older bundle format
                champion_error = f"champion v{mv.version} cannot be compared: {e}"
                log.warning("%s", champion_error)
            else:
                verdict = judge(challenger, champ_eval, max_quality_drop=max_quality_drop)
    return RetrainResult(merged, stats, summary, challenger, champ_eval, verdict, champion_error)
