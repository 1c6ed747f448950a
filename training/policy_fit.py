"""Set the decision policy's threshold to a quality goal the user names.

Goal syntax: a tier name, or `top` / `mid` / `cheapest`, optionally followed by
`-POINTS` percentage points of allowed quality loss: `top` = match the top tier,
`top-1` = at most 1 point below it, `sonnet-0.5`. The threshold is the cheapest one
whose held-out (out-of-fold) quality meets the goal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from router.ladder import Ladder
from router.policy import ThresholdPolicy

_GOAL = re.compile(r"^(?P<tier>[A-Za-z0-9_.:]+?)(?:-(?P<pts>\d+(?:\.\d+)?))?$")


@dataclass(frozen=True)
class Goal:
    tier_index: int
    points: float
    text: str


def parse_goal(text: str, ladder: Ladder) -> Goal:
    m = _GOAL.match(text.strip())
    if not m:
        raise ValueError(
            f"invalid --goal {text!r}: expected TIER or TIER-POINTS, e.g. 'top', 'top-1', 'mid'"
        )
    name, pts = m.group("tier"), float(m.group("pts") or 0.0)
    aliases = {"top": len(ladder) - 1, "mid": len(ladder) // 2, "cheapest": 0}
    if name in aliases:
        idx = aliases[name]
    elif name in ladder.names:
        idx = ladder.index(name)
    else:
        raise ValueError(
            f"invalid --goal {text!r}: unknown tier {name!r}; use one of "
            f"{['top', 'mid', 'cheapest', *ladder.names]}"
        )
    if pts > 100:
        raise ValueError(f"invalid --goal {text!r}: points must be <= 100")
    return Goal(idx, pts, text.strip())


def _choose(p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    ok = p[:, :-1] >= thresholds
    return np.where(ok.any(axis=1), ok.argmax(axis=1), p.shape[1] - 1)


def _score_many(
    p: np.ndarray, q: np.ndarray, c: np.ndarray, combos: np.ndarray, chunk: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Mean cost and quality of the policy at each row of `combos`, in batches: the same
    per-combination means as one _choose at a time (each a mean over one contiguous row),
    a few hundred times fewer Python steps."""
    rows = np.arange(len(p))
    costs, quals = np.empty(len(combos)), np.empty(len(combos))
    for s in range(0, len(combos), chunk):
        th = combos[s : s + chunk]
        ok = p[None, :, :-1] >= th[:, None, :]
        pick = np.where(ok.any(axis=2), ok.argmax(axis=2), p.shape[1] - 1)
        costs[s : s + len(th)] = c[rows, pick].mean(axis=1)
        quals[s : s + len(th)] = q[rows, pick].mean(axis=1)
    return costs, quals


GridScores = tuple[np.ndarray, np.ndarray, np.ndarray]  # combos, their costs, qualities


def grid_scores(p: np.ndarray, q: np.ndarray, c: np.ndarray, n_free: int) -> GridScores | None:
    """Every grid point's cost and quality (up to three tiers), to fit several goals on
    the same predictions with one evaluation (the trade-off table); None beyond."""
    if n_free > 2:
        return None
    grid = np.round(np.linspace(0.0, 1.0, 51), 4)
    combos = np.array(np.meshgrid(*[grid] * n_free)).T.reshape(-1, n_free)
    return (combos, *_score_many(p, q, c, combos))


def fit_threshold(
    p: np.ndarray,
    q: np.ndarray,
    c: np.ndarray,
    goal: Goal,
    ladder: Ladder,
    scores: GridScores | None = None,
) -> ThresholdPolicy:
    """Per-tier thresholds: the cheapest held-out operating point that meets the goal.

    Exhaustive over a grid for up to three tiers, coordinate descent beyond; falls back
    to always-top (thresholds above 1) when no setting meets the goal. `scores`: this
    p, q, c's grid_scores, when already computed.
    """
    rows = np.arange(len(p))
    target = float(q[:, goal.tier_index].mean()) - goal.points / 100.0
    top_cost = float(c[:, -1].mean())
    grid = np.round(np.linspace(0.0, 1.0, 51), 4)
    n_free = len(ladder) - 1

    def score(th: np.ndarray) -> tuple[float, float]:
        pick = _choose(p, th)
        return float(c[rows, pick].mean()), float(q[rows, pick].mean())

    best: tuple[float, float, tuple[float, ...]] | None = None

    def consider(th: np.ndarray) -> None:
        nonlocal best
        cost, qual = score(th)
        if qual >= target - 1e-12 and (best is None or (cost, -qual) < best[:2]):
            best = (cost, -qual, tuple(float(x) for x in th))

    if n_free <= 2:
        scored = scores if scores is not None else grid_scores(p, q, c, n_free)
        assert scored is not None  # n_free <= 2
        combos, costs, quals = scored
        for combo, cost, qual in zip(combos, costs.tolist(), quals.tolist(), strict=True):
            if qual >= target - 1e-12 and (best is None or (cost, -qual) < best[:2]):
                best = (cost, -qual, tuple(float(x) for x in combo))
    else:
        th = np.full(n_free, 0.5)
        for _ in range(3):
            for j in range(n_free):
                for v in grid:
                    trial = th.copy()
                    trial[j] = v
                    consider(trial)
                if best is not None:
                    th = np.array(best[2])
    met = best is not None
    thresholds = best[2] if best is not None else tuple([1.01] * n_free)
    pick = _choose(p, np.array(thresholds))
    expected = {
        "target_quality": target,
        "goal_met_on_validation": met,
        "validation_quality": float(q[rows, pick].mean()),
        "validation_cost_vs_top": float(c[rows, pick].mean()) / top_cost if top_cost else 1.0,
        "validation_tier_mix": np.bincount(pick, minlength=len(ladder)).tolist(),
        "validation_prompts": len(p),
    }
    return ThresholdPolicy(thresholds, goal=goal.text, tolerance=goal.points, expected=expected)
