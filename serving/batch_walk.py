"""One record of a routed batch run through the bundle's cascade, in rounds.

`router.cascade.walk` is a pure function of the answers it is given, so a batch run
replays it every round over the answers its jobs have brought back so far: the walk
either ends (the record is done) or asks for an answer it does not have yet, a tier's
or the second opinion's, which goes into the next round's job for that model. The
walk is the on-demand client's, so batch and on-demand traffic are judged alike, and
the record logged at the end has the same attempts, verdicts and `cascade` block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.cascade import Walk, walk
from router.ladder import Ladder, Tier
from serving.attempts import ANSWERED, ERROR, FAILED, PASSED, REJECTED, Attempt
from serving.batch_input import BatchItem
from serving.batch_run_state import Call, RecordState
from serving.cascade_run import Cascade, cascade_record
from serving.checks import Answer, Check
from serving.outcome_log import PromptStorage, answer_field, prompt_field
from serving.outcome_record import DecisionRecord, OutcomeLogRecord
from serving.pricing import Usage, cost_usd


class _Need(Exception):
    """The walk needs an answer this record does not have yet."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def check_failure(checks: tuple[Check, ...], item: BatchItem, tier: Tier, call: Call) -> str | None:
    """The first explicit check the answer fails (as the on-demand client runs them)."""
    answer = Answer(call.text, call.stop_reason, tier.name, tier.model_id, item.text)
    for check in checks:
        failure = check(answer)
        if failure is not None:
            return failure
    return None


@dataclass(frozen=True)
class Judge:
    """The cascade (None: no verifier in the bundle, the explicit checks alone decide),
    the ladder and the checks every tier's answer gets."""

    ladder: Ladder
    cascade: Cascade | None
    checks: tuple[Check, ...]

    @property
    def uses_second(self) -> bool:
        return (
            self.cascade is not None
            and self.cascade.file.second_opinion
            and self.ladder.second_opinion is not None
        )

    def tier_of(self, target: str) -> Tier:
        so = self.ladder.second_opinion
        if so is not None and target == so.name:
            return so
        return self.ladder.tiers[self.ladder.index(target)]

    def advance(self, item: BatchItem, rec: RecordState) -> Walk | str:
        """The finished walk, or the target (tier or second opinion) it needs next."""
        names = self.ladder.names

        def answer(i: int) -> str | None:
            target = names[i]
            if target in rec.dead:
                return None
            call = rec.calls.get(target)
            if call is None:
                raise _Need(target)
            if check_failure(self.checks, item, self.ladder.tiers[i], call) is not None:
                return None
            return call.text

        def second() -> str | None:
            so = self.ladder.second_opinion
            assert so is not None
            if so.name in rec.dead:
                return None
            call = rec.calls.get(so.name)
            if call is None:
                raise _Need(so.name)
            return call.text

        try:
            if self.cascade is None:
                return _checks_walk(rec.start, len(names), answer)
            c = self.cascade
            return walk(
                c.policy,
                c.file.cost,
                c.verifier,
                item.text,
                rec.p_router,
                answer,
                second if self.uses_second else None,
                start=rec.start,
            )
        except _Need as need:
            return need.target


def _checks_walk(start: int, n: int, answer: Any) -> Walk:
    """Without a cascade: the first tier from the start whose answer passes the checks."""
    w = Walk()
    for i in range(start, n):
        w.calls.append(f"tier:{i}")
        if answer(i) is not None:
            w.final = i
            break
    return w


@dataclass(frozen=True)
class Settled:
    """A finished record: its log record, its output line and its costs."""

    log: dict[str, Any]
    line: dict[str, Any]
    cost_usd: float
    on_demand_cost_usd: float
    answered: bool
    final_tier: str | None


def settle(
    judge: Judge,
    item: BatchItem,
    rec: RecordState,
    walked: Walk,
    router_version: str,
    p_names: list[str],
    storage: PromptStorage = PromptStorage.FEATURES,
    time: str | None = None,
    tags: Mapping[str, str] | None = None,
    hash_key: bytes = b"",
    features: Any | None = None,
    no_features: str | None = None,
) -> Settled:
    """The record's attempts (every call, in the walk's order, with its verdict), the
    outcome log record and the output line. The prompt and answers are logged under
    `storage` (serving.outcome_log.prompt_field: `features` and `no_features` are the
    router's features of the prompt under FEATURES)."""
    ladder = judge.ladder
    verdicts = {j.tier: j for j in walked.judgements if j.verdict != "consult"}
    attempts: list[Attempt] = []
    final_attempt: Attempt | None = None
    final_call: Call | None = None
    last: tuple[Attempt, Call] | None = None
    role = "decided"
    cost = od_cost = 0.0
    escalations = 0
    for c in walked.calls:
        if c == "second":
            assert ladder.second_opinion is not None
            tier, call_role = ladder.second_opinion, "second_opinion"
        else:
            tier, call_role = ladder.tiers[int(c.split(":")[1])], role
        call = rec.calls.get(tier.name)
        if call is None:  # every retry of the record failed: no answer from this model
            reason: str | None = rec.last_error.get(tier.name, "batch record failed")
            attempts.append(
                Attempt(tier.name, tier.model_id, call_role, ERROR, reason, None, Usage(),
                        0.0, 0.0, "BatchRecordFailed")
            )  # fmt: skip
            role = "failover" if c != "second" else role
            continue
        usage = Usage(call.input_tokens, call.output_tokens)
        batch_cost = tier.batch_cost_usd(call.input_tokens, call.output_tokens)
        cost += batch_cost
        od_cost += cost_usd(tier, usage)
        answer = answer_field(call.text, storage, hash_key)
        if c == "second":
            attempts.append(
                Attempt(tier.name, tier.model_id, call_role, ANSWERED, None, call.stop_reason,
                        usage, batch_cost, 0.0, answer=answer)
            )  # fmt: skip
            continue
        idx = ladder.index(tier.name)
        failure = check_failure(judge.checks, item, tier, call)
        j = verdicts.get(idx)
        verdict: dict[str, Any] | None = None
        outcome: str = PASSED if failure is None else FAILED
        reason = failure
        if failure is None and j is not None:
            verdict = j.to_log()
            if j.verdict == "escalate":
                outcome, reason = REJECTED, j.reason
        escalations += outcome in (FAILED, REJECTED)
        a = Attempt(tier.name, tier.model_id, call_role, outcome, reason, call.stop_reason, usage,
                    batch_cost, 0.0, verifier=verdict, answer=answer)  # fmt: skip
        attempts.append(a)
        last = (a, call)
        if walked.final == idx:
            final_attempt, final_call = a, call
        role = "escalation"
    if final_attempt is None and last is not None:  # no accepted answer: the best there is
        final_attempt, final_call = last
    ok = final_attempt is not None and final_attempt.outcome == PASSED
    usage_sum = sum((a.usage for a in attempts), Usage())
    decision_tier = ladder.tiers[rec.start]
    record = OutcomeLogRecord(
        request_id=item.id,
        attempts=tuple(a.record() for a in attempts),
        time=time,
        router_version=router_version,
        decision=DecisionRecord(
            decision_tier.name, rec.start, dict(zip(p_names, rec.p_router, strict=False)), None
        ),
        start_tier=decision_tier.name,
        turns=len(item.request.messages),
        final_tier=final_attempt.tier if final_attempt else None,
        final_model_id=final_attempt.model_id if final_attempt else None,
        final_stop_reason=final_call.stop_reason if final_call else None,
        ok=ok,
        failure_reason=None if ok else (final_attempt.reason if final_attempt else "no_answer"),
        escalations=escalations,
        cascade=cascade_record(judge.cascade.policy if judge.cascade else None, walked, ladder),
        usage=usage_sum.to_dict(),
        cost_usd=cost,
        tags={**(tags or {}), **item.tags, "mode": "batch"},
        prompt=prompt_field(item.text, storage, hash_key, features, no_features),
    ).to_dict()
    final_tier = final_attempt.tier if final_attempt else None
    line: dict[str, Any] = {
        "id": item.id,
        "ok": ok,
        "answer": final_call.text if final_call else None,
        "tier": final_tier,
        "tiers": [a.tier for a in attempts],
        "verdicts": [(a.verifier or {}).get("reason") or a.reason or a.outcome for a in attempts],
        "rounds": sorted({rec.calls[a.tier].round for a in attempts if a.tier in rec.calls}),
        "cost_usd": round(cost, 8),
        "on_demand_cost_usd": round(od_cost, 8),
    }
    if final_call is None:
        line["error"] = "; ".join(f"{k}: {v}" for k, v in rec.last_error.items()) or "no answer"
    return Settled(record, line, cost, od_cost, final_call is not None, final_tier)
