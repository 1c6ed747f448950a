"""The ladder walk: start on the routed tier, move up one tier per failed check, fail over
past tiers that do not answer, then the fallback model, then cheaper tiers.

`try_fallback` and `fail_down` are the end of every walk, the cascade's included.
"""

from __future__ import annotations

from router.ladder import Ladder
from serving.attempts import ERROR, PASSED, Answered, Attempt, WalkResult, keep
from serving.checks import Check
from serving.client_config import TieredClientConfig
from serving.tier_call import CallTier


def run_ladder(
    call: CallTier,
    ladder: Ladder,
    config: TieredClientConfig,
    start: int,
    checks: tuple[Check, ...],
) -> WalkResult:
    """Walk the ladder up from `start`; the answer to return is the first that passes,
    else the last one that came (the top's, or the one the escalation cap stopped on)."""
    attempts: list[Attempt] = []
    last: Answered | None = None
    escalations = 0
    role = "decided"
    top = len(ladder) - 1
    for idx in range(start, top + 1):
        got = keep(attempts, call(ladder.tiers[idx], idx, role, checks))
        if got is None:  # unavailable or errored: fail over
            role = "failover"
            continue
        last = got
        if got.attempt.outcome == PASSED:
            return WalkResult(attempts, got, False, escalations)
        if got.attempt.outcome == ERROR:  # a broken check: move on, not a quality label
            role = "failover"
            continue
        if idx == top:
            return WalkResult(attempts, got, False, escalations)
        cap = config.max_escalations
        if cap is not None and escalations >= cap:
            return WalkResult(attempts, got, True, escalations)
        escalations += 1
        role = "escalation"
    # The top of the ladder did not answer (or errored).
    final = try_fallback(call, config, checks, attempts)
    if final is None and last is None:
        final = fail_down(call, ladder, config, start, checks, attempts)
    return WalkResult(attempts, final or last, False, escalations)


def try_fallback(
    call: CallTier,
    config: TieredClientConfig,
    checks: tuple[Check, ...],
    attempts: list[Attempt],
) -> Answered | None:
    """The fallback model, when there is one; its answer, if it gave one."""
    if config.fallback is None:
        return None
    return keep(attempts, call(config.fallback, None, "fallback", checks))


def fail_down(
    call: CallTier,
    ladder: Ladder,
    config: TieredClientConfig,
    start: int,
    checks: tuple[Check, ...],
    attempts: list[Attempt],
) -> Answered | None:
    """Nothing from `start` up answered: the cheaper tiers, nearest first, when allowed."""
    if not config.failover_down:
        return None
    for idx in range(start - 1, -1, -1):
        got = keep(attempts, call(ladder.tiers[idx], idx, "failover_down", checks))
        if got is not None:
            return got
    return None
