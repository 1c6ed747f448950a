"""Live metrics and drift from outcome logs, as CloudWatch Embedded Metric Format.

Per window: requests, tier mix (the router's decisions) and start mix (the tier each
walk started on: a cascade's start rule, a sticky pin or exploration can differ from the
decision), escalation rate, cost per
request, latency p50/p99 and, per tier, calibration: the decided tier's predicted
P(pass) (`decision.p_pass`) against the verdict its answer got. Only decided attempts
are labels here: the router chose them by p, which leaves calibration-by-p unbiased,
while an escalation is chosen by the tier below failing, which does not. Requests the
cascade judged are left out of calibration and counted (`verifier_judged`): its accept
and reject are the verifier's predictions, and keeping the accepted ones (or only the
check failures) would bias the observed rate.

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
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.outcome_record import (
    QUALITY_OUTCOMES,
    DecisionRecord,
    NotAnOutcomeRecord,
    OutcomeLogRecord,
)

TV_BOUND = 0.10
Z_BOUND = 3.29  # two-sided p < 0.001
CALIBRATION_MARGIN = 0.05
MIN_LABELS = 20
NAMESPACE = "TierRouter"


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
class Window:
    """Metrics of the records in one window."""

    start: str
    end: str
    requests: int = 0
    escalated: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)
    tiers: dict[str, TierStats] = field(default_factory=dict)
    router_versions: set[str] = field(default_factory=set)
    drift: list[str] = field(default_factory=list)

    def tier(self, name: str) -> TierStats:
        return self.tiers.setdefault(name, TierStats())

    def add(self, rec: OutcomeLogRecord) -> None:
        self.requests += 1
        self.escalated += rec.escalations > 0
        self.failed += not rec.ok
        self.cost_usd += rec.cost_usd
        self.latencies.append(rec.latency_ms)
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
            if a.role != "decided":
                continue
            if rec.cascade is not None:
                self.tier(a.tier).verifier_judged += 1
                continue
            if a.outcome not in QUALITY_OUTCOMES:
                continue
            p = decision.p_pass.get(a.tier)
            if p is not None and 0 <= p <= 1 and not rec.route_error:
                self.tier(a.tier).label(float(p), int(a.outcome == "passed"))

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        k = min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))
        return xs[k]

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
            "drift": list(self.drift),
        }


def parse_records(
    records: Iterable[Mapping[str, Any] | OutcomeLogRecord],
) -> list[OutcomeLogRecord]:
    """Log lines (or records) as typed records; a line that is not one is an error."""
    out: list[OutcomeLogRecord] = []
    for i, r in enumerate(records):
        try:
            out.append(r if isinstance(r, OutcomeLogRecord) else OutcomeLogRecord.from_dict(r))
        except NotAnOutcomeRecord as e:
            raise MetricsError(f"record {i + 1} is not an outcome record: {e}") from None
    return out


def windows(
    records: Iterable[Mapping[str, Any] | OutcomeLogRecord],
    window_s: float | None = 300.0,
    window_requests: int | None = None,
) -> list[Window]:
    """Records grouped into consecutive windows by time (`window_s`) or by count."""
    if window_requests is not None and window_requests < 1:
        raise MetricsError("window_requests must be >= 1")
    if window_requests is None and (window_s is None or window_s <= 0):
        raise MetricsError("window_s must be > 0")
    out: list[Window] = []
    current: Window | None = None
    start_t = 0.0
    for rec in sorted(parse_records(records), key=lambda r: r.time or ""):
        t = _time(rec.time, rec.request_id)
        stamp = rec.time or ""
        if window_requests is not None:
            fresh = current is None or current.requests >= window_requests
        else:
            assert window_s is not None
            fresh = current is None or t - start_t >= window_s
        if fresh:
            if window_requests is None and window_s is not None:
                start_t = t - (t % window_s)
            current = Window(stamp, stamp)
            out.append(current)
        assert current is not None
        current.end = stamp
        current.add(rec)
    return out


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


def tier_names(records: Iterable[Mapping[str, Any] | OutcomeLogRecord]) -> list[str]:
    """Tier names in ladder order, from the records' decisions (p_pass keys keep it)."""
    for r in parse_records(records):
        if r.decision is not None and r.decision.p_pass:
            return list(r.decision.p_pass)
    raise MetricsError("no record has a decision with per-tier p_pass")
