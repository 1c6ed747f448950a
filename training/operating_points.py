"""Operating points a user chooses from, refitted from what the bundle keeps.

A bundle keeps the out-of-fold P(pass) its policy was fitted on, with each training
prompt's per-tier quality and cost (router.bundle.POLICY_DATA, one float64 .npy: no pickles), so
`tier-router policy --goal G` refits the thresholds (training/policy_fit.py) in
seconds instead of retraining. The trade-off table lists, for a handful of goals, the
out-of-fold quality, cost against always-top and always-middle, and tier mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.ladder import Ladder
from training.policy_fit import GridScores, fit_threshold, grid_scores, parse_goal

TABLE_GOALS = ("top", "top-0.5", "top-1", "top-2", "mid", "mid-1", "cheapest")


@dataclass(frozen=True)
class PolicyData:
    """Out-of-fold P(pass), quality (NaN = tier result missing) and cost, (n, tiers) each."""

    p: np.ndarray
    q: np.ndarray
    c: np.ndarray

    @property
    def complete(self) -> np.ndarray:
        return ~np.isnan(self.q).any(axis=1)

    def fit_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows `train` fits the policy on: prompts with every tier's result."""
        k = self.complete
        return self.p[k], self.q[k], self.c[k]

    def save(self, path: Path) -> None:
        arr = np.hstack([self.p, self.q, self.c]).astype(np.float64)
        np.save(path, arr, allow_pickle=False)

    @classmethod
    def load(cls, path: Path, tiers: int) -> PolicyData:
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2 or arr.shape[1] != 3 * tiers or arr.dtype != np.float64:
            raise ValueError(
                f"{path.name}: expected a float64 (n, {3 * tiers}) array, got {arr.dtype} "
                f"{arr.shape}"
            )
        p, q, c = np.split(arr, 3, axis=1)
        if not (np.isfinite(p).all() and np.isfinite(c).all()):
            raise ValueError(f"{path.name}: P(pass) and costs must be finite")
        return cls(p, q, c)


def goal_row(
    p: np.ndarray,
    q: np.ndarray,
    c: np.ndarray,
    goal_text: str,
    ladder: Ladder,
    scores: GridScores | None = None,
) -> dict[str, object]:
    """One line of the table: the policy `train --goal` would fit, and what it gives."""
    pol = fit_threshold(p, q, c, parse_goal(goal_text, ladder), ladder, scores)
    ok = p[:, :-1] >= np.array(pol.thresholds)
    pick = np.where(ok.any(axis=1), ok.argmax(axis=1), p.shape[1] - 1)
    rows = np.arange(len(p))
    cost = float(c[rows, pick].mean())
    mid = len(ladder) // 2
    return {
        "goal": goal_text,
        "thresholds": [round(t, 4) for t in pol.thresholds],
        "met": bool(pol.expected["goal_met_on_validation"]),
        "quality": float(q[rows, pick].mean()),
        "cost_vs_top": cost / float(c[:, -1].mean()),
        "cost_vs_mid": cost / float(c[:, mid].mean()),
        "tier_mix": (np.bincount(pick, minlength=len(ladder)) / max(1, len(p))).tolist(),
    }


def tradeoff_table(
    data: PolicyData, ladder: Ladder, goals: tuple[str, ...] = TABLE_GOALS
) -> list[dict[str, object]]:
    p, q, c = data.fit_rows()
    scores = grid_scores(p, q, c, len(ladder) - 1)
    seen, out = set(), []
    for g in goals:
        key = parse_goal(g, ladder)
        if (key.tier_index, key.points) in seen:  # e.g. mid == top on two tiers
            continue
        seen.add((key.tier_index, key.points))
        out.append(goal_row(p, q, c, g, ladder, scores))
    return out


def format_table(rows: list[dict[str, object]], data: PolicyData, ladder: Ladder) -> str:
    _, q, _ = data.fit_rows()
    always = " / ".join(f"{n} {v:.3f}" for n, v in zip(ladder.names, q.mean(axis=0), strict=True))
    head = (
        f"operating points (out-of-fold, {len(q)} training prompts; always: {always})\n"
        f"{'goal':10s} {'quality':>8s} {'cost/top':>9s} {'cost/mid':>9s}  "
        f"{'tier mix (' + ', '.join(ladder.names) + ')':32s} thresholds"
    )
    lines = [head]
    for r in rows:
        mix = ", ".join(f"{m:.0%}" for m in r["tier_mix"])  # type: ignore[attr-defined]
        flag = "" if r["met"] else "  (goal not met: always top)"
        lines.append(
            f"{r['goal']!s:10s} {r['quality']:8.3f} {r['cost_vs_top']:9.2f} "
            f"{r['cost_vs_mid']:9.2f}  {mix:32s} {r['thresholds']}{flag}"
        )
    return "\n".join(lines)


def gap_line(validation: dict[str, float]) -> str:
    """How much of the cheapest->top gap routing alone recovers here (from OOF figures)."""
    pgr = validation.get("pgr_auc")
    if pgr is None or not np.isfinite(pgr):
        return "routing alone: no out-of-fold curve (too few prompts with every tier's result)"
    at_top = validation.get("cost_at_top", float("inf"))
    reach = (
        f"reaches always-top quality at {at_top:.0%} of its cost"
        if np.isfinite(at_top)
        else "never reaches always-top quality"
    )
    verdict = (
        "the prompt text says much about which tier passes here"
        if pgr >= 0.9 and np.isfinite(at_top) and at_top < 0.8
        else "what is left is within-prompt difficulty text cannot see: judge answers "
        "(the cascade) to save more"
    )
    return (
        f"routing alone (out of fold): recovers {pgr:.0%} of the cheapest->top quality gap "
        f"on average over costs (pgr_auc {pgr:.3f}), {reach}; {verdict}"
    )
