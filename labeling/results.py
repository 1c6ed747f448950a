"""Graded answers as outcomes-file entries, and the run's spend.

`cost_usd` in a result is what that call was billed: the tier's on-demand price, or
half of it in batch mode (Bedrock's batch discount). The grader's own cost (the
judge) is kept apart in `grader_cost_usd`, since it is not a cost of the tier.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from labeling.answers import ModelAnswer
from labeling.graders import Verdict
from labeling.prompts import PromptItem
from outcomes import ModelResult, OutcomeRecord
from router.ladder import DEFAULT_BATCH_PRICE_FACTOR, Tier

BATCH_PRICE_FACTOR = DEFAULT_BATCH_PRICE_FACTOR
MODES = ("ondemand", "batch")


def call_cost(tier: Tier, answer: ModelAnswer, mode: str) -> float:
    if mode == "batch":  # the tier's batch price (default: half the on-demand one)
        return tier.batch_cost_usd(answer.input_tokens, answer.output_tokens)
    return tier.cost_usd(answer.input_tokens, answer.output_tokens)


def tier_result(tier: Tier, answer: ModelAnswer, verdict: Verdict, mode: str) -> ModelResult:
    extra: dict[str, Any] = {
        "grader": verdict.grader,
        "reason": verdict.reason,
        "stop_reason": answer.stop_reason,
        "mode": mode,
    }
    if verdict.cost_usd:
        extra["grader_cost_usd"] = verdict.cost_usd
    return ModelResult(
        score=min(1.0, max(0.0, float(verdict.score))),
        output_tokens=answer.output_tokens,
        input_tokens=answer.input_tokens,
        output_chars=len(answer.text),
        cost_usd=call_cost(tier, answer, mode),
        extra=extra,
    )


def outcome_record(item: PromptItem, results: dict[str, ModelResult]) -> OutcomeRecord:
    extra: dict[str, Any] = {}
    if item.reference is not None:
        extra["reference"] = item.reference
    if item.multi_turn:
        extra["messages"] = list(item.messages)
    return OutcomeRecord(
        id=item.id, prompt=item.text, results=results, split=item.split, task=item.task, extra=extra
    )


class Spend:
    """Dollars spent so far, safe to add to from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.model_usd = 0.0
        self.grader_usd = 0.0
        self.calls = 0

    def add(self, model_usd: float = 0.0, grader_usd: float = 0.0, calls: int = 0) -> None:
        with self._lock:
            self.model_usd += model_usd
            self.grader_usd += grader_usd
            self.calls += calls

    @property
    def total(self) -> float:
        return self.model_usd + self.grader_usd


@dataclass(frozen=True)
class RunSummary:
    """What a labeling run did; `status` decides the exit code."""

    mode: str
    status: str  # complete | spend_cap | failed | pending | interrupted
    prompts: int
    labeled: int
    already_done: int
    failed: int
    calls: int
    model_cost_usd: float
    grader_cost_usd: float
    seconds: float
    out: str
    message: str = ""

    @property
    def ondemand_cost_usd(self) -> float:
        """The tier calls at on-demand prices (what on-demand mode would pay)."""
        f = BATCH_PRICE_FACTOR if self.mode == "batch" else 1.0
        return self.model_cost_usd / f

    @property
    def batch_cost_usd(self) -> float:
        """The tier calls at batch prices (what batch mode would pay)."""
        return self.ondemand_cost_usd * BATCH_PRICE_FACTOR

    @property
    def exit_code(self) -> int:
        return {"complete": 0, "failed": 1, "spend_cap": 3, "pending": 4, "interrupted": 130}[
            self.status
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "status": self.status,
            "prompts": self.prompts,
            "labeled": self.labeled,
            "already_done": self.already_done,
            "failed": self.failed,
            "calls": self.calls,
            "cost_usd": round(self.model_cost_usd + self.grader_cost_usd, 6),
            "model_cost_usd": round(self.model_cost_usd, 6),
            "grader_cost_usd": round(self.grader_cost_usd, 6),
            "ondemand_cost_usd": round(self.ondemand_cost_usd, 6),
            "batch_cost_usd": round(self.batch_cost_usd, 6),
            "seconds": round(self.seconds, 2),
            "elapsed_s": round(self.seconds, 2),
            "out": self.out,
            "message": self.message,
        }
