"""What the client's calls come to: one Attempt per model call, the answer a walk returns,
and the response or error the caller gets. Shared by the ladder, cascade and stream walks,
so each speaks of outcomes with the same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.cascade import Walk
from router.decision import Decision
from serving.checks import TOOL_USE
from serving.outcome_record import (
    ACCEPTED,
    FAILED_CALL,
    REJECTED_VERDICT,
    UNJUDGED,
    AttemptRecord,
    Verdict,
)
from serving.pricing import Usage

# Attempt outcomes. Only PASSED and FAILED say anything about answer quality; REJECTED is the
# verifier's prediction that an answer would fail (not a label), ANSWERED a second opinion.
PASSED, FAILED, UNAVAILABLE, ERROR = "passed", "failed", "unavailable", "error"
REJECTED, ANSWERED = "rejected", "answered"


@dataclass(frozen=True)
class Attempt:
    """One model call the client made for a request, and what came of it."""

    tier: str
    model_id: str
    role: str  # decided | escalation | failover | fallback | failover_down
    outcome: str  # passed | failed | unavailable | error
    reason: str | None
    stop_reason: str | None
    usage: Usage
    cost_usd: float
    latency_ms: float
    error_code: str | None = None
    self_check: Mapping[str, Any] | None = None
    verifier: Mapping[str, Any] | None = None  # the cascade's judgement of this answer
    answer: Mapping[str, Any] | None = None  # the answer text, stored / hashed / dropped
    # Set by the cascade walk, which knows the signal; `verdict_of` derives the rest.
    judged: Verdict | None = None

    @property
    def verdict(self) -> Verdict:
        return self.judged or verdict_of(self)

    def record(self) -> AttemptRecord:
        """This attempt as the outcome log holds it."""
        return AttemptRecord(
            tier=self.tier,
            model_id=self.model_id,
            role=self.role,
            outcome=self.outcome,
            reason=self.reason,
            stop_reason=self.stop_reason,
            usage=self.usage.to_dict(),
            cost_usd=self.cost_usd,
            latency_ms=self.latency_ms,
            error_code=self.error_code,
            self_check=self.self_check,
            verifier=self.verifier,
            answer=self.answer,
            verdict=self.verdict,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.record().to_dict()


def verdict_of(a: Attempt) -> Verdict:
    """The verdict an attempt's own outcome implies (no cascade judgement on it)."""
    if a.outcome == UNAVAILABLE:
        return Verdict(FAILED_CALL, "unavailable")
    if a.outcome == ERROR:
        return Verdict(FAILED_CALL, "error")
    if a.outcome == ANSWERED:
        return Verdict(UNJUDGED, "second_opinion")
    if a.stop_reason == TOOL_USE and a.outcome == PASSED:
        return Verdict(UNJUDGED, "tool_use")
    if a.outcome == PASSED:
        return Verdict(ACCEPTED, "explicit_check")
    if a.outcome == REJECTED:
        return Verdict(REJECTED_VERDICT, "verifier")
    return Verdict(REJECTED_VERDICT, "explicit_check")


@dataclass
class Answered:
    """A call that came back with an answer (passed or not), and the answer itself."""

    attempt: Attempt
    text: str
    message: Mapping[str, Any]
    stop_reason: str
    deltas: tuple[str, ...] = ()


def keep(attempts: list[Attempt], got: Answered | Attempt) -> Answered | None:
    """Add one call to `attempts`; the answer, when it gave one."""
    if isinstance(got, Answered):
        attempts.append(got.attempt)
        return got
    attempts.append(got)
    return None


@dataclass
class WalkResult:
    """What a walk (ladder or cascade) did: every call, the answer to return, whether the
    escalation cap stopped it, the quality escalations, and the cascade's own account."""

    attempts: list[Attempt]
    final: Answered | None
    stopped_on_quality: bool = False
    escalations: int = 0
    walked: Walk | None = None


@dataclass(frozen=True)
class TieredResponse:
    """The answer, where it came from, and what it cost. `ok` is False when the final
    answer failed its checks and there was nowhere left to escalate."""

    request_id: str
    text: str
    message: Mapping[str, Any]
    ok: bool
    tier: str
    model_id: str
    stop_reason: str
    failure_reason: str | None
    attempts: tuple[Attempt, ...]
    escalations: int
    usage: Usage
    cost_usd: float
    latency_ms: float
    decision: Decision
    deltas: tuple[str, ...] = ()  # the text as it was streamed (converse_stream only)

    @property
    def tiers_tried(self) -> list[str]:
        return [a.tier for a in self.attempts]


class TieredClientError(RuntimeError):
    """Every tier (and the fallback) was unavailable or errored; says what was tried."""

    def __init__(self, request_id: str, attempts: Sequence[Attempt]) -> None:
        tried = "; ".join(
            f"{a.tier} ({a.model_id}): {a.outcome} {a.reason or ''}".strip() for a in attempts
        )
        super().__init__(f"request {request_id}: no model answered. Tried: {tried or 'nothing'}")
        self.request_id = request_id
        self.attempts = tuple(attempts)
