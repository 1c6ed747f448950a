"""Decision policy: the cheapest tier whose P(pass) clears its threshold, else the top tier."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# At most one point of quality below always-top: the goal `train` fits to unless told.
# Matching the top tier exactly leaves a policy nothing to trade, and one point is within
# the noise of one test split of a few thousand prompts.
DEFAULT_GOAL = "top-1"


@dataclass(frozen=True)
class ThresholdPolicy:
    """Thresholds for every tier but the top one, which is the fallback.

    `goal` and `expected` record what the thresholds were calibrated for (e.g. match the
    top tier's quality on held-out training data) and what that calibration measured.
    """

    thresholds: tuple[float, ...]
    goal: str = "top"
    tolerance: float = 0.0
    expected: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in self.thresholds:
            if not (isinstance(t, int | float) and math.isfinite(t) and 0.0 <= t <= 1.01 + 1e-9):
                raise ValueError(
                    f"policy thresholds must be numbers in [0, 1.01] (above 1 = never), got {t!r}"
                )

    @property
    def n_tiers(self) -> int:
        return len(self.thresholds) + 1

    def choose(self, p_pass: np.ndarray) -> np.ndarray:
        """Tier index per row of an (n, tiers) P(pass) matrix."""
        p = np.asarray(p_pass)
        if p.ndim != 2 or p.shape[1] != self.n_tiers:
            raise ValueError(f"expected P(pass) of shape (n, {self.n_tiers}), got {p.shape}")
        ok = p[:, :-1] >= np.asarray(self.thresholds)
        return np.where(ok.any(axis=1), ok.argmax(axis=1), self.n_tiers - 1)

    def choose_one(self, p_pass: list[float]) -> int:
        for i, t in enumerate(self.thresholds):
            if p_pass[i] >= t:
                return i
        return len(self.thresholds)

    def explain(self, names: tuple[str, ...], p_pass: list[float], chosen: int, note: str) -> str:
        """Which threshold each tier up to the chosen one missed or met, e.g.
        "policy: haiku p=0.41 < 0.55; sonnet p=0.62 >= 0.60" (`note` goes first)."""
        parts = []
        for i in range(min(chosen + 1, len(self.thresholds))):
            t = self.thresholds[i]
            bar = "never (> 1)" if t > 1.0 else f"{t:.3f}"
            parts.append(f"{names[i]} p={p_pass[i]:.3f} {'>=' if p_pass[i] >= t else '<'} {bar}")
        if chosen == len(self.thresholds):
            parts.append(f"{names[chosen]}: the top tier, taken when no cheaper tier clears")
        return f"{note}policy: " + "; ".join(parts)

    def to_json(self) -> str:
        d = asdict(self)
        d["kind"] = "threshold"
        d["thresholds"] = list(self.thresholds)
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ThresholdPolicy:
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("kind") != "threshold":
            raise ValueError("policy.json: expected an object with kind = 'threshold'")
        th = d.get("thresholds")
        if not isinstance(th, list) or not th:
            raise ValueError("policy.json: 'thresholds' must be a non-empty list")
        return cls(
            thresholds=tuple(float(x) for x in th),
            goal=str(d.get("goal", "top")),
            tolerance=float(d.get("tolerance", 0.0)),
            expected=dict(d.get("expected", {})),
        )
