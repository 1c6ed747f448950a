"""Choose the second opinion from data: each candidate the ladder names (and none) is fitted
as a full cascade on the training split, and the one with the best out-of-fold system
pgr_auc is kept.

Which second opinion is consulted matters as much as how answers are read: a strong cheap
model agrees with right answers and not with wrong ones, a weak one adds cost and noise.
The figures are out of fold on the training split, so the choice never looks at a test
split; the bundle's ladder names the one kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from outcomes import OutcomeRecord
from router.ladder import Ladder, Tier
from training.cascade_fit import CascadeResult
from training.recorded_answers import MIN_ANSWERED, answer_text

log = logging.getLogger(__name__)


def choose_second_opinion(
    records: Sequence[OutcomeRecord],
    ids: Sequence[str],
    ladder: Ladder,
    fit: Callable[[Ladder, dict[str, list[Any]]], CascadeResult],
) -> tuple[CascadeResult, Ladder, list[dict[str, Any]]]:
    """(the kept cascade, the ladder naming its second opinion, the comparison table).

    `fit(ladder, read_cache)` fits the cascade for one ladder (training.cascade_fit); with no
    candidates in the ladder it is called once, as before.
    """
    if not ladder.second_opinion_candidates:
        return fit(ladder, {}), ladder, []
    by_id = {r.id: r for r in records}
    cache: dict[str, list[Any]] = {}
    options: list[Tier | None] = [*ladder.second_opinion_options, None]
    table: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], CascadeResult, Ladder] | None = None
    for option in options:
        name = option.name if option is not None else None
        if option is not None:
            answered = sum(answer_text(by_id[i], option.outcomes_key) is not None for i in ids)
            if answered < MIN_ANSWERED:
                table.append({"second_opinion": name, "skipped": f"{answered} recorded answers"})
                continue
        candidate = replace(ladder, second_opinion=option, second_opinion_candidates=())
        result = fit(candidate, cache)
        oof = result.report["oof"]
        expected = result.file.policy.expected
        row = {
            "second_opinion": name,
            "outcomes_key": option.outcomes_key if option is not None else None,
            "oof_system_pgr_auc": round(float(oof["system_pgr_auc"]), 4),
            "oof_system_cost_at_top": _round(oof.get("system_cost_at_top")),
            "policy_quality": _round(expected.get("validation_quality")),
            "policy_cost_vs_top": _round(expected.get("validation_cost_vs_top")),
        }
        table.append(row)
        # Best pgr_auc; on a tie, the cheaper policy (none costs nothing extra).
        key = (float(oof["system_pgr_auc"]), -float(expected.get("validation_cost_vs_top", 0.0)))
        if best is None or key > best[0]:
            best = (key, result, candidate)
    if best is None:
        raise ValueError("no second-opinion option could be fitted")
    _, result, kept = best
    for row in table:
        row["kept"] = row.get("second_opinion") == (
            kept.second_opinion.name if kept.second_opinion else None
        ) and "skipped" not in row
    log.info(
        "second opinion chosen out of fold: %s (%s)",
        kept.second_opinion.name if kept.second_opinion else "none",
        table,
    )
    return result, kept, table


def _round(v: Any) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)
