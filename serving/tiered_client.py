"""The tiered client: route, call Bedrock on the chosen tier, check, escalate, log.

One `converse()` call asks the in-process router for a tier, calls Bedrock Converse
with that tier's model and inference settings, checks the answer and moves one
tier up when it fails. A tier that stays unavailable after botocore's retries is
skipped (then a fallback model, then cheaper tiers), so the caller only sees an
exception when nothing could answer at all. Every request writes one outcome
record before returning or raising; those records are the next router's labels.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router.cascade import CascadeFile, CascadePolicy, Walk, walk
from router.decision import Decision
from router.inference import inference_config
from router.ladder import Ladder, Tier
from router.verifier import Verifier
from serving.checks import (
    TOOL_USE,
    Answer,
    Check,
    SelfCheckConfig,
    builtin_checks,
    parse_verdict,
)
from serving.conversation import ConverseRequest, RequestError, StickyTiers, message_text
from serving.outcome_log import OutcomeLogger, PromptStorage, prompt_field
from serving.outcome_record import AttemptRecord, DecisionRecord, OutcomeLogRecord
from serving.pricing import CachePricing, Usage, cost_usd
from serving.routing import FixedTierRouter, RouterLike, load_router_or_failsafe

log = logging.getLogger(__name__)

# Error codes that mean "this tier is not available right now" rather than "this
# request is wrong"; both fail over, but only the former is expected in normal running.
UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelNotReadyException",
        "ModelTimeoutException",
        "ModelErrorException",
        "ServiceQuotaExceededException",
    }
)

# Attempt outcomes. Only PASSED and FAILED say anything about answer quality; REJECTED is the
# verifier's prediction that an answer would fail (not a label), ANSWERED a second opinion.
PASSED, FAILED, UNAVAILABLE, ERROR = "passed", "failed", "unavailable", "error"
REJECTED, ANSWERED = "rejected", "answered"


@dataclass(frozen=True)
class TieredClientConfig:
    """How the client escalates, fails over, explores and logs. Defaults are production-safe.

    - `max_escalations`: quality escalations allowed per request (None: up to the top tier).
    - `fallback`: a model (priced like a tier) to try when the top tier is unavailable.
    - `failover_down`: if nothing above answered, try cheaper tiers before giving up.
    - `failsafe_tier`: where to start if the router itself raises.
    - `exploration_rate`: chance of starting one tier below the decision, logged with its
      propensity so retraining can correct for it (0 = off).
    - `prompt_caching`: add Converse cache points (pair with conversation ids).
    - `cascade`: when the bundle carries a verifier and cascade policy, judge each answer
      with them (and call the second opinion when the policy asks); `cascade_point` picks
      one of the bundle's operating points by label ("policy" is the bundle's own).
      Answers are logged under `prompt_storage`, like the prompt.
    """

    use_builtin_checks: bool = True
    max_escalations: int | None = None
    self_check: SelfCheckConfig = field(default_factory=SelfCheckConfig)
    fallback: Tier | None = None
    failover_down: bool = True
    failsafe_tier: int | str = -1
    exploration_rate: float = 0.0
    prompt_caching: bool = False
    prompt_storage: PromptStorage = PromptStorage.STORE
    prompt_hash_key: bytes = b""
    cache_pricing: CachePricing = field(default_factory=CachePricing)
    tags: Mapping[str, str] = field(default_factory=dict)
    sticky_max_conversations: int = 100_000
    sticky_ttl_s: float = 3600.0
    seed: int | None = None
    cascade: bool = True
    cascade_point: str = "policy"

    def __post_init__(self) -> None:
        if self.max_escalations is not None and (
            isinstance(self.max_escalations, bool)
            or not isinstance(self.max_escalations, int)
            or self.max_escalations < 0
        ):
            raise ValueError(f"max_escalations must be None or >= 0, got {self.max_escalations!r}")
        r = self.exploration_rate
        if not isinstance(r, int | float) or not math.isfinite(r) or not 0 <= r < 1:
            raise ValueError(f"exploration_rate must be in [0, 1), got {r!r}")
        if not isinstance(self.prompt_storage, PromptStorage):
            raise ValueError(f"prompt_storage must be a PromptStorage, got {self.prompt_storage!r}")
        _check_tags(self.tags, "TieredClientConfig.tags")


def _check_tags(tags: Mapping[str, str], where: str) -> None:
    if not isinstance(tags, Mapping):
        raise ValueError(f"{where} must be a mapping of str -> str")
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"{where}: tag {k!r} must map a string to a string, got {v!r}")


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
        )

    def to_dict(self) -> dict[str, Any]:
        return self.record().to_dict()


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


@dataclass
class _WalkState:
    role: str = "decided"
    escalations: int = 0


@dataclass
class _Answered:
    attempt: Attempt
    text: str
    message: Mapping[str, Any]
    stop_reason: str
    deltas: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamDelta:
    """A piece of the answer's text, yielded as it arrives."""

    text: str


@dataclass(frozen=True)
class StreamDone:
    """The end of a stream: the full response (usage, cost, tier) and its outcome record."""

    response: TieredResponse
    record: Mapping[str, Any]


@dataclass(frozen=True)
class _Plan:
    """A validated, routed request: everything the walk and the record need."""

    t0: float
    req: ConverseRequest
    text: str
    request_id: str
    tags: dict[str, str]
    decision: Decision
    route_error: str | None
    cascade: CascadePolicy | None
    p_router: list[float]
    start: int
    conversation_id: str | None
    sticky: bool
    pinned_index: int | None
    exploration: dict[str, Any] | None
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class _NoStream:
    """A stream that did not start, and why."""

    outcome: str
    code: str | None
    reason: str


class _ToolTurn(Exception):
    """Ends a cascade walk: a tool-use turn is returned as it is, never judged."""

    def __init__(self, answered: _Answered) -> None:
        super().__init__("tool_use")
        self.answered = answered


class _StreamAssembler:
    """ConverseStream events -> text deltas, then a Converse-shaped response."""

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}
        self.deltas: list[str] = []
        self.stop_reason = ""
        self.usage: dict[str, Any] = {}
        self.first_at: float | None = None

    def feed(self, event: Mapping[str, Any]) -> str | None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        if "contentBlockStart" in event:
            ev = event["contentBlockStart"]
            tool = ev.get("start", {}).get("toolUse")
            if tool is not None:
                self.blocks[ev["contentBlockIndex"]] = {"toolUse": {**tool, "input": ""}}
        elif "contentBlockDelta" in event:
            ev = event["contentBlockDelta"]
            block = self.blocks.setdefault(ev["contentBlockIndex"], {})
            delta = ev.get("delta", {})
            if "text" in delta:
                block["text"] = block.get("text", "") + delta["text"]
                self.deltas.append(delta["text"])
                return str(delta["text"])
            if "toolUse" in delta:
                block.setdefault("toolUse", {"input": ""})["input"] += delta["toolUse"]["input"]
            # reasoningContent (extended thinking) is billed, not shown: not a text delta
        elif "messageStop" in event:
            self.stop_reason = str(event["messageStop"].get("stopReason", ""))
        elif "metadata" in event:
            self.usage = dict(event["metadata"].get("usage", {}))
        return None

    def first_ms(self, t0: float) -> float:
        return ((self.first_at or t0) - t0) * 1000

    def response(self) -> dict[str, Any]:
        content = []
        for _, block in sorted(self.blocks.items()):
            if "toolUse" in block:
                tool = dict(block["toolUse"])
                try:
                    tool["input"] = json.loads(tool["input"] or "{}")
                except ValueError:
                    tool["input"] = {}
                content.append({"toolUse": tool})
            elif "text" in block:
                content.append({"text": block["text"]})
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self.stop_reason,
            "usage": self.usage,
        }


class TieredClient:
    """Route -> Converse -> check -> escalate -> log. Thread-safe; reuse one per process."""

    def __init__(
        self,
        router: RouterLike,
        bedrock: Any,
        logger: OutcomeLogger | None = None,
        config: TieredClientConfig | None = None,
        checks: Sequence[Check] = (),
    ) -> None:
        self.router = router
        self.ladder = router.ladder
        self.bedrock = bedrock
        self.logger = logger
        self.config = config or TieredClientConfig()
        self.checks = tuple(checks)
        self._failsafe = FixedTierRouter(self.ladder, self.config.failsafe_tier, "failsafe")
        self._sticky = StickyTiers(self.config.sticky_max_conversations, self.config.sticky_ttl_s)
        self._rng = random.Random(self.config.seed)
        self._rng_lock = threading.Lock()
        self.cascade_file: CascadeFile | None = None
        self.verifier: Verifier | None = None
        self.cascade_policy: CascadePolicy | None = None
        if self.config.cascade:
            self._set_cascade(router)

    def _set_cascade(self, router: RouterLike) -> None:
        cascade = getattr(router, "cascade", None)
        verifier = getattr(router, "verifier", None)
        if not isinstance(cascade, CascadeFile) or not isinstance(verifier, Verifier):
            return
        label = self.config.cascade_point
        found = [p for p in (cascade.policy, *cascade.points) if p.label == label]
        if not found:
            labels = [p.label for p in (cascade.policy, *cascade.points)]
            raise ValueError(f"cascade_point {label!r} is not in the bundle; it has {labels}")
        self.cascade_file, self.verifier, self.cascade_policy = cascade, verifier, found[0]

    @classmethod
    def from_bundle(
        cls,
        bundle: str | Path,
        ladder: Ladder,
        bedrock: Any,
        logger: OutcomeLogger | None = None,
        config: TieredClientConfig | None = None,
        checks: Sequence[Check] = (),
    ) -> TieredClient:
        """A client whose router is loaded from `bundle`; if that fails (missing, corrupt,
        another ladder) it routes every request to `config.failsafe_tier` and each
        outcome record says why, instead of the service failing to start."""
        cfg = config or TieredClientConfig()
        router = load_router_or_failsafe(bundle, ladder, cfg.failsafe_tier)
        return cls(router, bedrock, logger, cfg, checks)

    # ------------------------------------------------------------------ public
    def converse(
        self,
        request: str | ConverseRequest | Sequence[Mapping[str, Any]],
        *,
        system: str | None = None,
        tool_config: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        checks: Sequence[Check] = (),
        request_id: str | None = None,
    ) -> TieredResponse:
        """Answer `request` (a prompt, a message list, or a ConverseRequest) on the cheapest
        tier that passes. Raises RequestError for a malformed request, TieredClientError
        only when no model could answer; logs an outcome record either way.

        A turn that ends in `stopReason: tool_use` is an answer, not a failure: it is not
        escalated, and the cascade verifier does not judge it (the caller runs the tool and
        sends the result in the next turn, with the same `conversation_id`)."""
        plan = self._prepare(
            request, system, conversation_id, tags, checks, request_id, tool_config
        )
        return self._complete(plan, stream=False)[0]

    def converse_stream(
        self,
        request: str | ConverseRequest | Sequence[Mapping[str, Any]],
        *,
        system: str | None = None,
        tool_config: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        checks: Sequence[Check] = (),
        request_id: str | None = None,
        verify: bool = False,
    ) -> Iterator[StreamDelta | StreamDone]:
        """Route, then stream the tier's answer through Bedrock ConverseStream: yields a
        StreamDelta per text delta as it arrives, then one StreamDone (response with usage
        and cost, and the outcome record, which is logged before it is yielded).

        Escalation policy for streams:
        - Before the first token the client may still change tier: a stream that cannot
          start (throttled past botocore's retries, 5xx, unavailable, an error on the first
          event) fails over exactly as `converse` does (up, fallback, then down), and the
          router's start tier (a cascade's included) is used as decided.
        - Once a token has been yielded the answer is committed: checks still run and the
          record says whether it passed, but nothing escalates; a stream that breaks mid-way
          is logged and raises TieredClientError.
        - `verify=True` buffers: every tier's stream is read whole, checked (explicit checks
          and, when the bundle has one, the cascade verifier) and escalated exactly as
          `converse` would, and only the answer that is returned is released as deltas.
        Raises RequestError before anything is sent, TieredClientError when nothing answered.
        """
        plan = self._prepare(
            request, system, conversation_id, tags, checks, request_id, tool_config
        )
        if verify:
            response, record = self._complete(plan, stream=True)
            for piece in response.deltas:
                yield StreamDelta(piece)
            yield StreamDone(response, record)
            return
        yield from self._stream_live(plan)

    # ------------------------------------------------------------ one request
    def _prepare(
        self,
        request: str | ConverseRequest | Sequence[Mapping[str, Any]],
        system: str | None,
        conversation_id: str | None,
        tags: Mapping[str, str] | None,
        checks: Sequence[Check],
        request_id: str | None,
        tool_config: Mapping[str, Any] | None,
    ) -> _Plan:
        """Validate, route, apply the sticky pin and exploration: where the walk starts."""
        t0 = time.perf_counter()
        req = _normalize(request, system, tool_config)
        call_tags = {**self.config.tags, **(tags or {})}
        _check_tags(call_tags, "tags")
        rid = request_id or uuid.uuid4().hex
        text = req.routing_text()
        decision, route_error = self._decide(text)
        cascade = self.cascade_policy if route_error is None else None
        p_router = [float(decision.p_pass[n]) for n in self.ladder.names] if cascade else []
        if cascade is not None and self.cascade_file is not None:
            costs = self.cascade_file.cost.start_costs(len(text))
            start = cascade.start_tier(p_router, costs)
        else:
            start = decision.tier_index
        sticky = False
        pinned_index: int | None = None
        if conversation_id is not None:
            pinned = self._sticky.get(conversation_id)
            if pinned is not None and pinned in self.ladder.names:
                # Routed once, on the first turn; later turns start where it is (never lower).
                start, sticky = self.ladder.index(pinned), True
                pinned_index = start
        exploration = None if sticky else self._explore(start)
        if exploration is not None and exploration["explored"]:
            start -= 1
        all_checks = (builtin_checks() if self.config.use_builtin_checks else ()) + self.checks
        all_checks += tuple(checks)
        return _Plan(
            t0,
            req,
            text,
            rid,
            call_tags,
            decision,
            route_error,
            cascade,
            p_router,
            start,
            conversation_id,
            sticky,
            pinned_index,
            exploration,
            all_checks,
        )

    def _complete(self, plan: _Plan, stream: bool) -> tuple[TieredResponse, dict[str, Any]]:
        """The whole policy (cascade or ladder walk) for one request, then its record."""
        walked: Walk | None = None
        if plan.cascade is not None:
            attempts, final, stopped_on_quality, escalations, walked = self._run_cascade(
                plan.cascade, plan.req, plan.text, plan.start, plan.checks, plan.p_router, stream
            )
        else:
            attempts, final, stopped_on_quality, escalations = self._run(
                plan.req, plan.text, plan.start, plan.checks, stream
            )
        streamed = {"verify": True} if stream else None
        return self._finish(
            plan, attempts, final, stopped_on_quality, escalations, walked, streamed
        )

    def _finish(
        self,
        plan: _Plan,
        attempts: list[Attempt],
        final: _Answered | None,
        stopped_on_quality: bool,
        escalations: int,
        walked: Walk | None,
        stream: Mapping[str, Any] | None,
    ) -> tuple[TieredResponse, dict[str, Any]]:
        """Write the outcome record (always), then return the response or raise."""
        decision, cascade, rid = plan.decision, plan.cascade, plan.request_id
        latency_ms = (time.perf_counter() - plan.t0) * 1000
        usage = sum((a.usage for a in attempts), Usage())
        cost = sum(a.cost_usd for a in attempts)
        ok = final is not None and final.attempt.outcome == PASSED
        if (
            final is not None
            and plan.conversation_id is not None
            and final.attempt.tier in self.ladder.names
            and (
                plan.pinned_index is None
                or self.ladder.index(final.attempt.tier) >= plan.pinned_index
            )
        ):
            self._sticky.set(plan.conversation_id, final.attempt.tier)
        record = OutcomeLogRecord(
            request_id=rid,
            attempts=tuple(a.record() for a in attempts),
            time=_dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
            router_version=decision.router_version,
            decision=DecisionRecord(
                decision.tier, decision.tier_index, dict(decision.p_pass), decision.reason
            ),
            route_error=plan.route_error,
            start_tier=self.ladder.tiers[plan.start].name,
            conversation_id=plan.conversation_id,
            sticky=plan.sticky,
            turns=len(plan.req.messages),
            exploration=plan.exploration,
            final_tier=final.attempt.tier if final else None,
            final_model_id=final.attempt.model_id if final else None,
            final_stop_reason=final.stop_reason if final else None,
            ok=ok,
            failure_reason=None if ok else (final.attempt.reason if final else "no_answer"),
            escalations=escalations,
            stopped_by_max_escalations=stopped_on_quality,
            cascade=None
            if walked is None or cascade is None
            else {
                "point": cascade.label,
                "calls": walked.calls,
                "final_tier": None if walked.final is None else self.ladder.names[walked.final],
                "judgements": [j.reason for j in walked.judgements],
            },
            usage=usage.to_dict(),
            cost_usd=cost,
            latency_ms=round(latency_ms, 3),
            tags=plan.tags,
            prompt=prompt_field(plan.text, self.config.prompt_storage, self.config.prompt_hash_key),
            stream=stream,
        ).to_dict()
        if self.logger is not None:
            self.logger.write(record)
        if final is None:
            raise TieredClientError(rid, attempts)
        response = TieredResponse(
            request_id=rid,
            text=final.text,
            message=final.message,
            ok=ok,
            tier=final.attempt.tier,
            model_id=final.attempt.model_id,
            stop_reason=final.stop_reason,
            failure_reason=None if ok else final.attempt.reason,
            attempts=tuple(attempts),
            escalations=escalations,
            usage=usage,
            cost_usd=cost,
            latency_ms=latency_ms,
            decision=decision,
            deltas=final.deltas,
        )
        return response, record

    def _stream_live(self, plan: _Plan) -> Iterator[StreamDelta | StreamDone]:
        """Unbuffered: fail over until a stream yields its first event, then commit."""
        top = len(self.ladder) - 1
        order: list[tuple[Tier, int | None, str]] = [
            (self.ladder.tiers[i], i, "decided" if i == plan.start else "failover")
            for i in range(plan.start, top + 1)
        ]
        if self.config.fallback is not None:
            order.append((self.config.fallback, None, "fallback"))
        if self.config.failover_down:
            order += [
                (self.ladder.tiers[i], i, "failover_down") for i in range(plan.start - 1, -1, -1)
            ]
        attempts: list[Attempt] = []
        body = plan.req.to_bedrock(self.config.prompt_caching)
        for tier, _idx, role in order:
            t = time.perf_counter()
            opened = self._open_stream(tier, body)
            if isinstance(opened, _NoStream):  # no stream: fail over, the caller saw nothing
                outcome, code, reason = opened.outcome, opened.code, opened.reason
                attempts.append(
                    Attempt(
                        tier.name,
                        tier.model_id,
                        role,
                        outcome,
                        reason,
                        None,
                        Usage(),
                        0.0,
                        _ms(t),
                        code,
                    )
                )
                continue
            first, events = opened
            asm = _StreamAssembler()
            try:
                for event in itertools.chain((first,), events):
                    piece = asm.feed(event)
                    if piece:
                        yield StreamDelta(piece)
            except GeneratorExit:  # the caller stopped reading: still one record
                usage = Usage.from_bedrock(asm.usage)
                attempts.append(
                    Attempt(
                        tier.name,
                        tier.model_id,
                        role,
                        ERROR,
                        "caller_closed_stream",
                        None,
                        usage,
                        cost_usd(tier, usage, self.config.cache_pricing),
                        _ms(t),
                    )
                )
                with contextlib.suppress(TieredClientError):
                    self._finish(plan, attempts, None, False, 0, None, {"verify": False})
                raise
            except (ClientError, BotoCoreError) as e:  # broken mid-stream: committed, so fail
                usage = Usage.from_bedrock(asm.usage)
                attempts.append(
                    Attempt(
                        tier.name,
                        tier.model_id,
                        role,
                        ERROR,
                        f"stream_broken: {e}"[:300],
                        None,
                        usage,
                        cost_usd(tier, usage, self.config.cache_pricing),
                        _ms(t),
                        type(e).__name__,
                    )
                )
                self._finish(plan, attempts, None, False, 0, None, {"verify": False})
                return
            got = self._judge(
                tier, role, asm.response(), plan.text, plan.checks, _ms(t), asm.deltas
            )
            attempts.append(got.attempt if isinstance(got, _Answered) else got)
            if isinstance(got, Attempt):  # a malformed stream before any text: fail over
                if not asm.deltas:
                    continue
                break
            live = {"verify": False, "first_event_ms": round(asm.first_ms(t), 3)}
            response, record = self._finish(plan, attempts, got, False, 0, None, live)
            yield StreamDone(response, record)
            return
        self._finish(plan, attempts, None, False, 0, None, {"verify": False})

    def _open_stream(
        self, tier: Tier, body: dict[str, Any]
    ) -> tuple[Mapping[str, Any], Iterator[Mapping[str, Any]]] | _NoStream:
        """Start ConverseStream on `tier` and read its first event (botocore retries the
        start); (first event, the rest) or, when it did not start, (outcome, code, reason)."""
        try:
            resp = self.bedrock.converse_stream(modelId=tier.model_id, **self._params(tier), **body)
            events = iter(resp["stream"])
            first = next(events)
        except StopIteration:
            return _NoStream(ERROR, "EmptyStream", "the stream ended before its first event")
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "ClientError"))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            outcome = UNAVAILABLE if code in UNAVAILABLE_CODES or status >= 500 else ERROR
            return _NoStream(outcome, code, f"{code} (HTTP {status})")
        except BotoCoreError as e:
            return _NoStream(UNAVAILABLE, type(e).__name__, f"{type(e).__name__}: {e}"[:300])
        except Exception as e:
            log.exception("unexpected error streaming from %s", tier.model_id)
            return _NoStream(ERROR, type(e).__name__, str(e)[:300])
        return first, events

    # ---------------------------------------------------------------- routing
    def _decide(self, text: str) -> tuple[Decision, str | None]:
        try:
            d = self.router.route(text)
            if not 0 <= d.tier_index < len(self.ladder):
                raise ValueError(f"router returned tier_index {d.tier_index}")
            return d, None
        except Exception as e:  # a broken router must not take serving down
            log.exception("router failed; using fail-safe tier")
            return self._failsafe.route(text), f"{type(e).__name__}: {e}"

    def _explore(self, start: int) -> dict[str, Any] | None:
        rate = self.config.exploration_rate
        if rate <= 0:
            return None
        decided = self.ladder.tiers[start].name
        if start == 0:
            return {"rate": rate, "explored": False, "propensity": 1.0, "decided_tier": decided}
        with self._rng_lock:
            explored = self._rng.random() < rate
        return {
            "rate": rate,
            "explored": explored,
            "propensity": rate if explored else 1.0 - rate,
            "decided_tier": decided,
        }

    # ------------------------------------------------------------- the ladder
    def _run(
        self,
        req: ConverseRequest,
        text: str,
        start: int,
        checks: tuple[Check, ...],
        stream: bool = False,
    ) -> tuple[list[Attempt], _Answered | None, bool, int]:
        """Walk the ladder; returns attempts, the answer to return, whether the
        escalation cap stopped it, and the number of quality escalations."""
        attempts: list[Attempt] = []
        last: _Answered | None = None
        escalations = 0
        role = "decided"
        top = len(self.ladder) - 1
        for idx in range(start, top + 1):
            got = self._attempt(self.ladder.tiers[idx], idx, role, req, text, checks, stream)
            attempts.append(got.attempt if isinstance(got, _Answered) else got)
            if isinstance(got, Attempt):  # unavailable or errored: fail over
                role = "failover"
                continue
            last = got
            if got.attempt.outcome == PASSED:
                return attempts, got, False, escalations
            if got.attempt.outcome == ERROR:  # a broken check: move on, not a quality label
                role = "failover"
                continue
            if idx == top:
                return attempts, got, False, escalations
            cap = self.config.max_escalations
            if cap is not None and escalations >= cap:
                return attempts, got, True, escalations
            escalations += 1
            role = "escalation"
        # The top of the ladder did not answer (or errored).
        fb = self.config.fallback
        if fb is not None:
            got = self._attempt(fb, None, "fallback", req, text, checks, stream)
            attempts.append(got.attempt if isinstance(got, _Answered) else got)
            if isinstance(got, _Answered):
                return attempts, got, False, escalations
        if last is None and self.config.failover_down:
            for idx in range(start - 1, -1, -1):
                got = self._attempt(
                    self.ladder.tiers[idx], idx, "failover_down", req, text, checks, stream
                )
                attempts.append(got.attempt if isinstance(got, _Answered) else got)
                if isinstance(got, _Answered):
                    return attempts, got, False, escalations
        return attempts, last, False, escalations

    def _run_cascade(
        self,
        policy: CascadePolicy,
        req: ConverseRequest,
        text: str,
        start: int,
        checks: tuple[Check, ...],
        p_router: list[float],
        stream: bool = False,
    ) -> tuple[list[Attempt], _Answered | None, bool, int, Walk]:
        """router.cascade.walk with live calls: a tier's answer that fails an explicit check
        (or does not come) moves the walk up as a rejected one would; every call, the
        second opinion's included, is an attempt of its own."""
        assert self.verifier is not None and self.cascade_file is not None
        attempts: list[Attempt] = []
        answered: dict[int, tuple[int, _Answered]] = {}  # tier -> (attempt index, answer)
        last: list[_Answered] = []
        state = _WalkState()

        def answer(idx: int) -> str | None:
            got = self._attempt(self.ladder.tiers[idx], idx, state.role, req, text, checks, stream)
            if isinstance(got, Attempt):
                attempts.append(got)
                state.role = "failover"
                return None
            attempts.append(got.attempt)
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

        second_tier = self.ladder.second_opinion

        def second() -> str | None:
            assert second_tier is not None
            got = self._attempt(second_tier, None, "second_opinion", req, text, (), stream)
            if isinstance(got, Attempt):
                attempts.append(got)
                return None
            attempts.append(replace(got.attempt, outcome=ANSWERED))
            return got.text

        use_second = second_tier is not None and self.cascade_file.second_opinion
        try:
            w = walk(
                policy,
                self.cascade_file.cost,
                self.verifier,
                text,
                p_router,
                answer,
                second if use_second else None,
                start=start,
            )
        except _ToolTurn as turn:  # the tool call goes back to the caller, unjudged
            return attempts, turn.answered, False, state.escalations, Walk()
        # Each judged tier's attempt carries its judgement; a rejected answer is REJECTED.
        for j in w.judgements:
            if j.tier not in answered or j.verdict == "consult":
                continue
            k, judged = answered[j.tier]
            verdict = {
                "p_pass": round(j.p_pass, 4),
                "shift": round(j.shift, 4),
                "threshold": j.threshold,
                "context": j.context,
                "verdict": j.verdict,
                "reason": j.reason,
            }
            if j.verdict == "escalate":
                attempts[k] = replace(
                    attempts[k], outcome=REJECTED, reason=j.reason, verifier=verdict
                )
                state.escalations += 1
            else:
                attempts[k] = replace(attempts[k], verifier=verdict)
            answered[j.tier] = (k, replace(judged, attempt=attempts[k]))
        if w.final is not None:
            return attempts, answered[w.final][1], False, state.escalations, w
        top_name = self.ladder.tiers[-1].name
        fb = self.config.fallback
        if fb is not None and not any(a.attempt.tier == top_name for a in last):
            fb_got = self._attempt(fb, None, "fallback", req, text, checks, stream)
            attempts.append(fb_got.attempt if isinstance(fb_got, _Answered) else fb_got)
            if isinstance(fb_got, _Answered):
                return attempts, fb_got, False, state.escalations, w
        if last and last[-1].attempt.tier == top_name:  # the top answered but failed a
            return attempts, last[-1], False, state.escalations, w  # check: as _run does
        if answered:  # the best judged answer there is, though rejected: ok is False
            return attempts, answered[max(answered)][1], False, state.escalations, w
        final = last[-1] if last else None
        if final is None and self.config.failover_down:
            for idx in range(start - 1, -1, -1):
                down = self._attempt(
                    self.ladder.tiers[idx], idx, "failover_down", req, text, checks, stream
                )
                attempts.append(down.attempt if isinstance(down, _Answered) else down)
                if isinstance(down, _Answered):
                    return attempts, down, False, state.escalations, w
        return attempts, final, False, state.escalations, w

    def _attempt(
        self,
        tier: Tier,
        idx: int | None,
        role: str,
        req: ConverseRequest,
        text: str,
        checks: tuple[Check, ...],
        stream: bool = False,
    ) -> _Answered | Attempt:
        """One tier: call it (whole, or streamed and buffered), then check the answer.
        An Attempt alone means no answer."""
        body = req.to_bedrock(self.config.prompt_caching)
        if stream:
            resp, usage, latency_ms, err_outcome, err_code, err_reason, deltas = (
                self._call_streamed(tier, body)
            )
        else:
            resp, usage, latency_ms, err_outcome, err_code, err_reason = self._call(tier, body)
            deltas = ()
        if resp is None:
            cost = cost_usd(tier, usage, self.config.cache_pricing)
            return Attempt(
                tier.name,
                tier.model_id,
                role,
                err_outcome,
                err_reason,
                None,
                usage,
                cost,
                latency_ms,
                err_code,
            )
        return self._judge(tier, role, resp, text, checks, latency_ms, deltas, idx)

    def _judge(
        self,
        tier: Tier,
        role: str,
        resp: Mapping[str, Any],
        text: str,
        checks: tuple[Check, ...],
        latency_ms: float,
        deltas: Sequence[str] = (),
        idx: int | None = None,
    ) -> _Answered | Attempt:
        """Explicit checks (and the self-check) on one tier's response."""
        usage = Usage.from_bedrock(resp.get("usage"))
        cost = cost_usd(tier, usage, self.config.cache_pricing)
        try:
            message = resp["output"]["message"]
            stop_reason = str(resp.get("stopReason", ""))
            answer_text = message_text(message)
        except (KeyError, TypeError):
            return Attempt(
                tier.name,
                tier.model_id,
                role,
                ERROR,
                "bad_response",
                None,
                usage,
                cost,
                latency_ms,
            )
        answer = Answer(answer_text, stop_reason, tier.name, tier.model_id, text, message)
        outcome, reason = PASSED, None
        for check in checks:
            try:
                failure = check(answer)
            except Exception as e:
                log.warning("check %s raised %s; treating as an error", check.name, e)
                outcome, reason = ERROR, f"check_error:{check.name}:{type(e).__name__}"
                break
            if failure is not None:
                outcome, reason = FAILED, failure
                break
        self_check: dict[str, Any] | None = None
        if (
            outcome == PASSED
            and idx == 0
            and self.config.self_check.enabled
            and stop_reason != TOOL_USE
        ):
            self_check, sc_usage, sc_latency = self._self_check(tier, text, answer_text)
            usage = usage + sc_usage
            cost += cost_usd(tier, sc_usage, self.config.cache_pricing)
            latency_ms += sc_latency
            if self_check["verdict"] == "fail":
                outcome, reason = FAILED, "self_check"
        attempt = Attempt(
            tier.name,
            tier.model_id,
            role,
            outcome,
            reason,
            stop_reason,
            usage,
            cost,
            latency_ms,
            None,
            self_check,
            None,
            prompt_field(answer_text, self.config.prompt_storage, self.config.prompt_hash_key),
        )
        return _Answered(attempt, answer_text, message, stop_reason, tuple(deltas))

    def _params(self, tier: Tier) -> dict[str, Any]:
        """The tier's inference settings and extra model fields, as Converse takes them."""
        out: dict[str, Any] = {"inferenceConfig": inference_config(tier)}
        if tier.additional_request_fields:
            out["additionalModelRequestFields"] = dict(tier.additional_request_fields)
        return out

    def _call(
        self, tier: Tier, body: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, Usage, float, str, str | None, str | None]:
        """Bedrock Converse on `tier` (botocore retries inside). Never raises."""
        t = time.perf_counter()
        try:
            resp = self.bedrock.converse(modelId=tier.model_id, **self._params(tier), **body)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "ClientError"))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            outcome = UNAVAILABLE if code in UNAVAILABLE_CODES or status >= 500 else ERROR
            return None, Usage(), _ms(t), outcome, code, f"{code} (HTTP {status})"
        except BotoCoreError as e:
            reason = f"{type(e).__name__}: {e}"[:300]
            return None, Usage(), _ms(t), UNAVAILABLE, type(e).__name__, reason
        except Exception as e:
            log.exception("unexpected error calling %s", tier.model_id)
            return None, Usage(), _ms(t), ERROR, type(e).__name__, str(e)[:300]
        return resp, Usage.from_bedrock(resp.get("usage")), _ms(t), PASSED, None, None

    def _call_streamed(
        self, tier: Tier, body: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, Usage, float, str, str | None, str | None, tuple[str, ...]]:
        """ConverseStream on `tier`, read whole (buffered verification). Never raises."""
        t = time.perf_counter()
        opened = self._open_stream(tier, body)
        if isinstance(opened, _NoStream):
            return None, Usage(), _ms(t), opened.outcome, opened.code, opened.reason, ()
        first, events = opened
        asm = _StreamAssembler()
        try:
            for event in itertools.chain((first,), events):
                asm.feed(event)
        except (ClientError, BotoCoreError) as e:
            usage = Usage.from_bedrock(asm.usage)
            return (
                None,
                usage,
                _ms(t),
                UNAVAILABLE,
                type(e).__name__,
                f"stream_broken: {e}"[:300],
                (),
            )
        resp = asm.response()
        return (
            resp,
            Usage.from_bedrock(resp["usage"]),
            _ms(t),
            PASSED,
            None,
            None,
            tuple(asm.deltas),
        )

    def _self_check(
        self, tier: Tier, prompt: str, answer: str
    ) -> tuple[dict[str, Any], Usage, float]:
        sc = self.config.self_check
        body = {"messages": [{"role": "user", "content": [{"text": sc.render(prompt, answer)}]}]}
        grading = Tier(
            tier.name,
            tier.model_id,
            tier.outcomes_key,
            tier.price_in_per_mtok,
            tier.price_out_per_mtok,
            max_tokens=sc.max_tokens,
            temperature=0.0,
        )
        resp, usage, latency_ms, _, code, _reason = self._call(grading, body)
        if resp is None:
            return {"verdict": "error", "error_code": code}, usage, latency_ms
        try:
            verdict = parse_verdict(message_text(resp["output"]["message"]))
        except (KeyError, TypeError):
            verdict = None
        label = {True: "pass", False: "fail", None: "inconclusive"}[verdict]
        return {"verdict": label, "usage": usage.to_dict()}, usage, latency_ms


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def _normalize(
    request: str | ConverseRequest | Sequence[Mapping[str, Any]],
    system: str | None,
    tool_config: Mapping[str, Any] | None = None,
) -> ConverseRequest:
    if isinstance(request, ConverseRequest):
        if system is not None or tool_config is not None:
            return ConverseRequest.build(
                request.messages, system or request.system, tool_config or request.tool_config
            )
        return request
    if isinstance(request, str):
        if not request.strip():
            raise RequestError("prompt must be a non-empty string")
        return ConverseRequest.from_prompt(request, system, tool_config)
    return ConverseRequest.build(request, system, tool_config)
