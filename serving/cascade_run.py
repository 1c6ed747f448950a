"""The cascade walk with live calls: `router.cascade.walk` judges each tier's answer with
the bundle's verifier and moves up on a rejection; the second opinion is called when the
policy asks for it. What the walk did goes on the attempts (each judgement) and in the
outcome record's `cascade` block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from router.cascade import CascadePolicy, Judgement, Walk, walk
from router.ladder import Ladder
from serving.attempts import (
    ANSWERED,
    ERROR,
    FAILED,
    PASSED,
    REJECTED,
    Answered,
    Attempt,
    WalkResult,
    keep,
)
from serving.checks import TOOL_USE
from serving.client_config import TieredClientConfig
from serving.ladder_run import fail_down, try_fallback
from serving.outcome_record import ACCEPTED, REJECTED_VERDICT, Verdict
from serving.request_plan import RequestPlan
from serving.snapshot import Cascade as Cascade
from serving.snapshot import find_cascade as find_cascade
from serving.tier_call import CallTier


class _ToolTurn(Exception):
    """Ends a cascade walk: a tool-use turn is returned as it is, never judged."""

    def __init__(self, answered: Answered) -> None:
        super().__init__("tool_use")
        self.answered = answered


@dataclass
class _WalkState:
    role: str = "decided"
    escalations: int = 0


def run_cascade(
    call: CallTier,
    ladder: Ladder,
    config: TieredClientConfig,
    plan: RequestPlan,
) -> WalkResult:
    """router.cascade.walk with live calls: a tier's answer that fails an explicit check
    (or does not come) moves the walk up as a rejected one would; every call, the
    second opinion's included, is an attempt of its own."""
    cascade = plan.cascade
    assert cascade is not None
    attempts: list[Attempt] = []
    answered: dict[int, tuple[int, Answered]] = {}  # tier -> (attempt index, answer)
    last: list[Answered] = []
    state = _WalkState()

    def answer(idx: int) -> str | None:
        got = keep(attempts, call(ladder.tiers[idx], idx, state.role, plan.checks))
        if got is None:
            state.role = "failover"
            return None
        if got.stop_reason == TOOL_USE and got.attempt.outcome == PASSED:
            raise _ToolTurn(got)
        last.append(got)
        if got.attempt.outcome != PASSED:
            state.role = "failover" if got.attempt.outcome == ERROR else "escalation"
            state.escalations += got.attempt.outcome == FAILED
            return None
        answered[idx] = (len(attempts) - 1, got)
        state.role = "escalation"
        return got.text

    second_tier = ladder.second_opinion

    def second() -> str | None:
        assert second_tier is not None
        got = call(second_tier, None, "second_opinion", ())
        if isinstance(got, Attempt):
            attempts.append(got)
            return None
        attempts.append(replace(got.attempt, outcome=ANSWERED))
        return got.text

    use_second = second_tier is not None and cascade.file.second_opinion
    w = Walk()
    try:
        walk(
            cascade.policy,
            cascade.file.cost,
            cascade.verifier,
            plan.text,
            plan.p_router,
            answer,
            second if use_second else None,
            start=plan.start,
            into=w,
        )
    except _ToolTurn as turn:  # the tool call goes back to the caller, unjudged; the
        # answers judged below it keep their verdicts
        state.escalations += _mark_judged(w.judgements, attempts, answered)
        return WalkResult(attempts, turn.answered, False, state.escalations, w)
    state.escalations += _mark_judged(w.judgements, attempts, answered)
    if w.final is not None:
        final: Answered | None = answered[w.final][1]
    else:
        budget = cascade.policy.max_calls - len(attempts)
        final = _no_accepted(
            _bounded(call, budget), ladder, config, plan, attempts, answered, last
        )
    return WalkResult(attempts, final, False, state.escalations, w)


class _CallCap(Exception):
    """max_calls reached: no further call may be made for this request."""


def _bounded(call: CallTier, budget: int) -> CallTier:
    """`call`, refusing (with _CallCap) once `budget` more calls were made."""
    left = [budget]

    def bounded(*args: Any) -> Answered | Attempt:
        if left[0] <= 0:
            raise _CallCap()
        left[0] -= 1
        return call(*args)

    return bounded


def _mark_judged(
    judgements: list[Judgement],
    attempts: list[Attempt],
    answered: dict[int, tuple[int, Answered]],
) -> int:
    """Each judged tier's attempt carries its judgement; a rejected answer is REJECTED.
    Returns how many answers were rejected (each a quality escalation)."""
    rejected = 0
    for j in judgements:
        if j.tier not in answered or j.verdict == "consult":
            continue
        k, judged = answered[j.tier]
        verdict = j.to_log()
        judged_as = _verdict(j)
        if j.verdict == "escalate":
            attempts[k] = replace(
                attempts[k], outcome=REJECTED, reason=j.reason, verifier=verdict, judged=judged_as
            )
            rejected += 1
        else:
            attempts[k] = replace(attempts[k], verifier=verdict, judged=judged_as)
        answered[j.tier] = (k, replace(judged, attempt=attempts[k]))
    return rejected


def _verdict(j: Judgement) -> Verdict:
    """A cascade judgement as a typed verdict: what was concluded, on which signal."""
    if j.context == "no_second":
        signal = "second_opinion_unavailable" if j.verdict == "escalate" else "call_cap"
    elif j.verdict in ("top", "cap"):
        signal = "top_tier" if j.verdict == "top" else "call_cap"
    else:
        signal = "agreement" if j.context in ("second", "both") else "verifier"
    return Verdict(REJECTED_VERDICT if j.verdict == "escalate" else ACCEPTED, signal)


def _no_accepted(
    call: CallTier,
    ladder: Ladder,
    config: TieredClientConfig,
    plan: RequestPlan,
    attempts: list[Attempt],
    answered: dict[int, tuple[int, Answered]],
    last: list[Answered],
) -> Answered | None:
    """The walk accepted no answer: the fallback (unless the top answered), else the best
    answer there is (ok is False), else cheaper tiers when nothing answered at all."""
    top_name = ladder.tiers[-1].name
    if not any(a.attempt.tier == top_name for a in last):
        try:
            got = try_fallback(call, config, plan.checks, attempts)
        except _CallCap:
            got = None
        if got is not None:
            return got
    if last and last[-1].attempt.tier == top_name:  # the top answered but failed a
        return last[-1]  # check: as the ladder walk does
    if answered:  # the best judged answer there is, though rejected
        return answered[max(answered)][1]
    if last:
        return last[-1]
    try:
        return fail_down(call, ladder, config, plan.start, plan.checks, attempts)
    except _CallCap:
        return None


def cascade_record(
    policy: CascadePolicy | None, walked: Walk | None, ladder: Ladder
) -> dict[str, Any] | None:
    """The outcome record's `cascade` block: operating point, calls, final tier, reasons."""
    if walked is None or policy is None:
        return None
    return {
        "point": policy.label,
        "calls": walked.calls,
        "final_tier": None if walked.final is None else ladder.names[walked.final],
        "judgements": [j.reason for j in walked.judgements],
    }
