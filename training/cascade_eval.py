"""The system's cost-quality curve: the cascade replayed over recorded answers, then graded.

Same definitions as the router's curve (training.evaluate) and as the outside check
(cascadeval.py): every call of a replay is paid for at the outcomes file's cost model,
quality is the recorded score of the returned answer, and the metrics are read off the
upper envelope of the operating points together with the fixed tiers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from outcomes import OutcomeRecord
from router import Router
from training.evaluate import envelope_metrics, upper_envelope
from training.recorded_answers import call_cost
from training.replay import replay_records, replayable


@dataclass(frozen=True)
class SystemCurve:
    points: dict[str, tuple[float, float]]  # label -> (mean cost, mean quality)
    fixed: list[tuple[float, float]]  # always-tier (cost, quality), cheapest first
    policy_calls: float  # calls per request at the bundle's own point
    n: int

    def metrics(self) -> dict[str, float]:
        return envelope_metrics(list(self.points.values()), self.fixed)

    def envelope(self) -> list[tuple[float, float]]:
        return upper_envelope([*self.points.values(), *self.fixed])


def system_curve(router: Router, records: list[OutcomeRecord]) -> SystemCurve | None:
    """Replay the bundle's cascade on `records` (those with every tier's answer and score)."""
    ladder = router.ladder
    if router.cascade is None:
        return None
    keys = [t.outcomes_key for t in ladder.tiers]
    recs = [
        r
        for r in records
        if replayable(r, keys) and all(not np.isnan(r.results[k].score) for k in keys)
    ]
    if not recs:
        return None
    by_key = {t.outcomes_key: t for t in ladder.tiers}
    if ladder.second_opinion is not None:
        by_key.setdefault(ladder.second_opinion.outcomes_key, ladder.second_opinion)
    by_id = {r.id: r for r in recs}
    cost: dict[str, list[float]] = defaultdict(list)
    qual: dict[str, list[float]] = defaultdict(list)
    calls_at_policy: list[int] = []
    for line in replay_records(router, recs):
        rec = by_id[line.id]
        cost[line.point].append(sum(call_cost(rec.prompt, rec, by_key[k]) for k in line.calls))
        qual[line.point].append(rec.results[line.final].score if line.final else 0.0)
        if line.point == "policy":
            calls_at_policy.append(len(line.calls))
    fixed = [
        (
            float(np.mean([call_cost(r.prompt, r, t) for r in recs])),
            float(np.mean([r.results[t.outcomes_key].score for r in recs])),
        )
        for t in ladder.tiers
    ]
    points = {k: (float(np.mean(cost[k])), float(np.mean(qual[k]))) for k in cost}
    return SystemCurve(points, fixed, float(np.mean(calls_at_policy)), len(recs))


def system_report(curve: SystemCurve) -> dict[str, Any]:
    c, q = curve.points["policy"]
    top_c = curve.fixed[-1][0]
    return {
        **curve.metrics(),
        "n": curve.n,
        "points": len(curve.points),
        "policy": {
            "quality": q,
            "cost": c,
            "cost_vs_top": c / top_c if top_c else float("nan"),
            "calls_per_request": curve.policy_calls,
        },
    }
