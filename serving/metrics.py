"""Live metrics and drift from outcome logs, as CloudWatch Embedded Metric Format.

Per window: requests, tier mix (the router's decisions) and start mix (the tier each
walk started on: a cascade's start rule, a sticky pin or exploration can differ from the
decision), escalation rate, cost per
request, latency p50/p99 and, per tier, calibration: the decided tier's predicted
P(pass) (`decision.p_pass`) against the label its answer got. Which attempts are labels
is training/log_labels.calibration_labels' (the caller passes it in: serving writes
records, the rules live in training): only decided attempts, which the router chose by
p, so calibration-by-p stays unbiased (an escalation is chosen by the tier below failing,
which is not). A cascade's accept and reject are the verifier's predictions: its decided
answers count only when graded; the rest are counted as `verifier_judged`.

Streaming: records are read once, in order, and folded into windows; a window keeps
counts and a bounded latency summary (exact up to EXACT_LATENCIES values, then
log-bucketed within 1%), so memory grows with the number of windows, never with the
number of records. Windows of N requests (`window_requests`) follow the read order (each
log is in time order, and S3 keys of the S3 sink sort by time); time windows do not
depend on the order.

Drift, against the bundle's held-out expectation (train_report.json):
- tier mix: the live mix differs from `policy_expected.validation_tier_mix` by more than
  TV_BOUND in total variation AND some tier's share fails a two-proportion z-test at
  |z| > Z_BOUND (both: a real and a not-by-chance difference);
- calibration, per tier: |observed pass rate - mean predicted| exceeds that tier's
  held-out `validation.calibration_error` by CALIBRATION_MARGIN AND its z-score
  (sum(y - p) / sqrt(sum p(1-p))) exceeds Z_BOUND, with at least MIN_LABELS verdicts.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.outcome_record import (
    DecisionRecord,
    NotAnOutcomeRecord,
    OutcomeLogRecord,
)

# (tier, passed) of a record's decided attempts that carry a label.
CalibrationLabels = Callable[[OutcomeLogRecord], Iterable[tuple[str, int]]]

TV_BOUND = 0.10
Z_BOUND = 3.29  # two-sided p < 0.001
CALIBRATION_MARGIN = 0.05
MIN_LABELS = 20
NAMESPACE = "TierRouter"
EXACT_LATENCIES = 4096  # per window; past this, latencies go to log buckets
_LATENCY_GAMMA = 1.02  # bucket i covers (gamma^(i-1), gamma^i]: a value within 1%


class MetricsError(ValueError):
    """A bundle report or a log that cannot be monitored; the message says why."""


@dataclass(frozen=True)
class Expectation:
    """What the bundle measured on held-out data: tier mix and calibration error."""

    tiers: tuple[str, ...]
    tier_mix: tuple[float, ...]
    n: int
    calibration_error: tuple[float, ...]

    @classmethod
    def from_bundle(cls, bundle: str | Path) -> Expectation:
        b = Path(bundle)
        report_path, ladder_path = b / "train_report.json", b / "ladder.toml"
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
            import tomllib

            ladder = tomllib.loads(ladder_path.read_text(encoding="utf-8"))
            tiers = tuple(str(t["name"]) for t in ladder["tier"])
            mix = [float(x) for x in report["policy_expected"]["validation_tier_mix"]]
            ece = [float(x) for x in report["validation"]["calibration_error"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MetricsError(
                f"{b}: no held-out expectation (train_report.json policy_expected."
                f"validation_tier_mix and validation.calibration_error, ladder.toml): {e}"
            ) from None
        total = sum(mix)
        if len(mix) != len(tiers) or len(ece) != len(tiers) or total <= 0:
            raise MetricsError(f"{b}: tier mix / calibration do not match the ladder {tiers}")
        return cls(tiers, tuple(x / total for x in mix), int(total), tuple(ece))


@dataclass
class TierStats:
    decided: int = 0
    started: int = 0
    verifier_judged: int = 0  # decided attempts the cascade judged: not labels
    answers_judged: int = 0  # answers the cascade judged (any role), and of those
    answers_readable: int = 0  # the ones whose final answer the reader could read
    final: int = 0
    p_sum: float = 0.0
    var_sum: float = 0.0
    passed: int = 0
    labels: int = 0
    ece_bins: list[list[float]] = field(
        default_factory=lambda: [[0.0, 0.0, 0.0] for _ in range(10)]
    )

    def label(self, p: float, y: int) -> None:
        self.labels += 1
        self.passed += y
        self.p_sum += p
        self.var_sum += p * (1 - p)
        b = self.ece_bins[min(9, int(p * 10))]
        b[0] += 1
        b[1] += p
        b[2] += y

    @property
    def predicted(self) -> float | None:
        return self.p_sum / self.labels if self.labels else None

    @property
    def observed(self) -> float | None:
        return self.passed / self.labels if self.labels else None

    @property
    def ece(self) -> float | None:
        if not self.labels:
            return None
        return sum(abs(b[1] - b[2]) for b in self.ece_bins if b[0]) / self.labels

    @property
    def z(self) -> float | None:
        if not self.labels or self.var_sum <= 0:
            return None
        return (self.passed - self.p_sum) / math.sqrt(self.var_sum)


@dataclass
class LatencySummary:
    """Latencies of one window: exact while few, then log buckets (bounded memory)."""

    exact: list[float] = field(default_factory=list)
    buckets: dict[int, int] = field(default_factory=dict)
    n: int = 0

    def add(self, x: float) -> None:
        self.n += 1
        if not self.buckets and len(self.exact) < EXACT_LATENCIES:
            self.exact.append(x)
            return
        if self.exact:
            for v in self.exact:
                self._bucket(v)
            self.exact = []
        self._bucket(x)

    def _bucket(self, x: float) -> None:
        i = math.ceil(math.log(x, _LATENCY_GAMMA)) if x > 0 else -(10**6)
        self.buckets[i] = self.buckets.get(i, 0) + 1

    def percentile(self, q: float) -> float | None:
        if not self.n:
            return None
        k = min(self.n - 1, max(0, math.ceil(q / 100 * self.n) - 1))
        if not self.buckets:
            return sorted(self.exact)[k]
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen > k:
                # the bucket's midpoint: within (gamma - 1) / (gamma + 1) of any value in it
                return 0.0 if i == -(10**6) else 2 * _LATENCY_GAMMA**i / (_LATENCY_GAMMA + 1)
        raise AssertionError("unreachable: counts sum to n")


@dataclass
class Window:
    """Metrics of the records in one window."""

    start: str
    end: str
    requests: int = 0
    escalated: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    latencies: LatencySummary = field(default_factory=LatencySummary)
    tiers: dict[str, TierStats] = field(default_factory=dict)
    router_versions: set[str] = field(default_factory=set)
    drift: list[str] = field(default_factory=list)

    def tier(self, name: str) -> TierStats:
        return self.tiers.setdefault(name, TierStats())

    def add(self, rec: OutcomeLogRecord, labels: CalibrationLabels | None = None) -> None:
        """Fold one record in; `labels` gives its decided attempts' labels (the rules are
        training/log_labels.calibration_labels; without it there is no calibration)."""
        self.requests += 1
        self.escalated += rec.escalations > 0
        self.failed += not rec.ok
        self.cost_usd += rec.cost_usd
        self.latencies.add(rec.latency_ms)
        self.router_versions.add(str(rec.router_version))
        decision = rec.decision or DecisionRecord()
        if decision.tier is not None:
            self.tier(decision.tier).decided += 1
        started = rec.start_tier or decision.tier
        if started is not None:
            self.tier(started).started += 1
        if rec.final_tier is not None:
            self.tier(rec.final_tier).final += 1
        for a in rec.attempts:
            if a.verifier is not None and "answer_kind" in a.verifier:
                self.tier(a.tier).answers_judged += 1
                self.tier(a.tier).answers_readable += a.verifier["answer_kind"] is not None
        labelled = list(labels(rec)) if labels is not None else []
        if rec.cascade is not None:  # decided answers the verifier judged, ungraded
            judged = Counter(a.tier for a in rec.attempts if a.role == "decided")
            judged.subtract(t for t, _ in labelled)
            for t, n in judged.items():
                self.tier(t).verifier_judged += max(n, 0)
        if rec.route_error:
            return
        for t, y in labelled:
            p = decision.p_pass.get(t)
            if p is not None and 0 <= p <= 1:
                self.tier(t).label(float(p), int(y))

    def percentile(self, q: float) -> float | None:
        return self.latencies.percentile(q)

    def mix(self, names: Sequence[str]) -> list[float]:
        n = sum(self.tier(t).decided for t in names)
        return [self.tier(t).decided / n if n else 0.0 for t in names]

    def start_mix(self, names: Sequence[str]) -> list[float]:
        n = sum(self.tier(t).started for t in names)
        return [self.tier(t).started / n if n else 0.0 for t in names]

    def summary(self, names: Sequence[str]) -> dict[str, Any]:
        n = max(self.requests, 1)
        return {
            "start": self.start,
            "end": self.end,
            "requests": self.requests,
            "escalation_rate": round(self.escalated / n, 4),
            "failure_rate": round(self.failed / n, 4),
            "cost_per_request_usd": self.cost_usd / n,
            "latency_p50_ms": self.percentile(50),
            "latency_p99_ms": self.percentile(99),
            "tier_mix": dict(zip(names, [round(x, 4) for x in self.mix(names)], strict=True)),
            "start_tier_mix": dict(
                zip(names, [round(x, 4) for x in self.start_mix(names)], strict=True)
            ),
            "calibration": {
                t: {
                    "labels": s.labels,
                    "predicted": None if s.predicted is None else round(s.predicted, 4),
                    "observed": None if s.observed is None else round(s.observed, 4),
                    "ece": None if s.ece is None else round(s.ece, 4),
                    "verifier_judged": s.verifier_judged,
                }
                for t, s in ((t, self.tier(t)) for t in names)
            },
            # What the answer reader made of the replies the cascade judged: a low share
            # means a reply format it misses, and a cascade that cannot compare answers.
            "answers_readable": {
                t: round(s.answers_readable / s.answers_judged, 4) if s.answers_judged else None
                for t, s in ((t, self.tier(t)) for t in names)
            },
            "drift": list(self.drift),
        }


def iter_records(
    records: Iterable[Mapping[str, Any] | OutcomeLogRecord],
) -> Iterator[OutcomeLogRecord]:
    """Log lines (or records) as typed records, one at a time; a line that is not one is
    an error naming its position."""
    for i, r in enumerate(records):
        try:
            yield r if isinstance(r, OutcomeLogRecord) else OutcomeLogRecord.from_dict(r)
        except NotAnOutcomeRecord as e:
            raise MetricsError(f"record {i + 1} is not an outcome record: {e}") from None


def parse_records(
    records: Iterable[Mapping[str, Any] | OutcomeLogRecord],
) -> list[OutcomeLogRecord]:
    """All of `iter_records` as a list (for small logs and tests)."""
    return list(iter_records(records))


def iter_windows(
    records: Iterable[Mapping[str, Any] | OutcomeLogRecord],
    window_s: float | None = 300.0,
    window_requests: int | None = None,
    labels: CalibrationLabels | None = None,
) -> Iterator[Window]:
    """Records folded into windows in one pass: by count (`window_requests`, in read
    order, each window yielded when full) or by time (`window_s`-aligned buckets, yielded
    in time order after the last record)."""
    if window_requests is not None and window_requests < 1:
        raise MetricsError("window_requests must be >= 1")
    if window_requests is None and (window_s is None or window_s <= 0):
        raise MetricsError("window_s must be > 0")
    current: Window | None = None
    by_bucket: dict[int, Window] = {}
    for rec in iter_records(records):
        t = _time(rec.time, rec.request_id)
        stamp = rec.time or ""
        if window_requests is not None:
            if current is not None and current.requests >= window_requests:
                yield current
                current = None
            if current is None:
                current = Window(stamp, stamp)
            w = current
        else:
            assert window_s is not None
            bucket = math.floor(t / window_s)
            w = by_bucket.get(bucket) or by_bucket.setdefault(bucket, Window(stamp, stamp))
        w.start, w.end = min(w.start, stamp), max(w.end, stamp)
        w.add(rec, labels)
    if current is not None:
        yield current
    for bucket in sorted(by_bucket):
        yield by_bucket[bucket]


def windows(
    records: Iterable[Mapping[str, Any] | OutcomeLogRecord],
    window_s: float | None = 300.0,
    window_requests: int | None = None,
    labels: CalibrationLabels | None = None,
) -> list[Window]:
    """All of `iter_windows` as a list."""
    return list(iter_windows(records, window_s, window_requests, labels))


def _time(stamp: str | None, request_id: str | None = None) -> float:
    try:
        return _dt.datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        raise MetricsError(f"record {request_id!r} has no ISO time") from None


def check_drift(w: Window, exp: Expectation) -> list[str]:
    """The window's drift findings against the held-out expectation (also kept on `w`)."""
    found: list[str] = []
    names = exp.tiers
    live = w.mix(names)
    n = sum(w.tier(t).decided for t in names)
    if n:
        tv = 0.5 * sum(abs(a - b) for a, b in zip(live, exp.tier_mix, strict=True))
        zs = [_two_prop_z(a, n, b, exp.n) for a, b in zip(live, exp.tier_mix, strict=True)]
        worst = max(range(len(names)), key=lambda i: abs(zs[i]))
        if tv > TV_BOUND and abs(zs[worst]) > Z_BOUND:
            found.append(
                f"tier_mix: total variation {tv:.3f} > {TV_BOUND} from held-out "
                f"{_fmt(exp.tier_mix)} (live {_fmt(live)}; {names[worst]} z={zs[worst]:.1f})"
            )
    for i, t in enumerate(names):
        s = w.tier(t)
        if s.labels < MIN_LABELS or s.z is None:
            continue
        assert s.observed is not None and s.predicted is not None
        gap = abs(s.observed - s.predicted)
        bound = exp.calibration_error[i] + CALIBRATION_MARGIN
        if gap > bound and abs(s.z) > Z_BOUND:
            found.append(
                f"calibration:{t}: observed pass {s.observed:.3f} vs predicted "
                f"{s.predicted:.3f} (gap {gap:.3f} > held-out ECE + {CALIBRATION_MARGIN} = "
                f"{bound:.3f}; z={s.z:.1f}, {s.labels} verdicts)"
            )
    w.drift = found
    return found


def _two_prop_z(p1: float, n1: int, p2: float, n2: int) -> float:
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n2))
    return (p1 - p2) / se


def _fmt(xs: Sequence[float]) -> str:
    return "[" + ", ".join(f"{x:.2f}" for x in xs) + "]"


def emf_lines(w: Window, names: Sequence[str], namespace: str = NAMESPACE) -> list[str]:
    """CloudWatch Embedded Metric Format: one line for the window, one per tier."""
    ts = int(_time(w.end) * 1000)
    version = ",".join(sorted(w.router_versions))
    s = w.summary(names)
    head = {
        "_aws": {
            "Timestamp": ts,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["RouterVersion"]],
                    "Metrics": [
                        {"Name": "Requests", "Unit": "Count"},
                        {"Name": "EscalationRate", "Unit": "None"},
                        {"Name": "FailureRate", "Unit": "None"},
                        {"Name": "CostPerRequest", "Unit": "None"},
                        {"Name": "LatencyP50", "Unit": "Milliseconds"},
                        {"Name": "LatencyP99", "Unit": "Milliseconds"},
                        {"Name": "Drift", "Unit": "Count"},
                    ],
                }
            ],
        },
        "RouterVersion": version,
        "Requests": w.requests,
        "EscalationRate": s["escalation_rate"],
        "FailureRate": s["failure_rate"],
        "CostPerRequest": s["cost_per_request_usd"],
        "LatencyP50": s["latency_p50_ms"],
        "LatencyP99": s["latency_p99_ms"],
        "Drift": len(w.drift),
        "DriftFindings": list(w.drift),
    }
    lines = [json.dumps(head)]
    for t in names:
        ts_ = w.tier(t)
        metrics = [{"Name": "TierShare", "Unit": "None"}, {"Name": "FinalShare", "Unit": "None"}]
        doc: dict[str, Any] = {
            "RouterVersion": version,
            "Tier": t,
            "TierShare": s["tier_mix"][t],
            "FinalShare": round(ts_.final / max(w.requests, 1), 4),
        }
        if ts_.labels:
            metrics += [
                {"Name": "PredictedPass", "Unit": "None"},
                {"Name": "ObservedPass", "Unit": "None"},
                {"Name": "CalibrationError", "Unit": "None"},
                {"Name": "Verdicts", "Unit": "Count"},
            ]
            doc.update(
                PredictedPass=ts_.predicted,
                ObservedPass=ts_.observed,
                CalibrationError=ts_.ece,
                Verdicts=ts_.labels,
            )
        doc["_aws"] = {
            "Timestamp": ts,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["RouterVersion", "Tier"]],
                    "Metrics": metrics,
                }
            ],
        }
        lines.append(json.dumps(doc))
    return lines


def peek_tier_names(
    records: Iterable[OutcomeLogRecord],
) -> tuple[list[str] | None, Iterator[OutcomeLogRecord]]:
    """Tier names from the first record with a decision, and every record still to fold
    (those read to find it first): names without reading the whole log."""
    it = iter(records)
    head: list[OutcomeLogRecord] = []
    for r in it:
        head.append(r)
        if r.decision is not None and r.decision.p_pass:
            return list(r.decision.p_pass), itertools.chain(head, it)
    return None, iter(head)


def tier_names(records: Iterable[Mapping[str, Any] | OutcomeLogRecord]) -> list[str]:
    """Tier names in ladder order, from the records' decisions (p_pass keys keep it)."""
    for r in iter_records(records):
        if r.decision is not None and r.decision.p_pass:
            return list(r.decision.p_pass)
    raise MetricsError("no record has a decision with per-tier p_pass")


def backlog_emf(
    logger_stats: Mapping[str, Any], namespace: str = NAMESPACE, timestamp_ms: int | None = None
) -> str:
    """One EMF line for the outcome logger's backlog (`OutcomeLogger.stats()`): records and
    bytes held and dropped, so a drop shows up as a metric (alarm on OutcomeLogDropped > 0)
    and not only in the process's log."""
    import time as _time

    names = ("Backlog", "BacklogBytes", "Dropped", "DroppedBytes")
    keys = ("backlog", "backlog_bytes", "dropped", "dropped_bytes")
    units = ("Count", "Bytes", "Count", "Bytes")
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(_time.time() * 1000) if timestamp_ms is None else timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [[]],
                    "Metrics": [
                        {"Name": f"OutcomeLog{n}", "Unit": u}
                        for n, u in zip(names, units, strict=True)
                    ],
                }
            ],
        },
        "MaxBacklogBytes": logger_stats.get("max_backlog_bytes"),
    }
    for n, k in zip(names, keys, strict=True):
        doc[f"OutcomeLog{n}"] = int(logger_stats.get(k, 0))
    return json.dumps(doc)
