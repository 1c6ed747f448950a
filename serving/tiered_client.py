"""The tiered client: route, call Bedrock on the chosen tier, check, escalate, log.

One `converse()` call asks the in-process router for a tier, calls Bedrock Converse
with that tier's model and inference settings, checks the answer and moves one
tier up when it fails. A tier that stays unavailable after botocore's retries is
skipped (then a fallback model, then cheaper tiers), so the caller only sees an
exception when nothing could answer at all. Every request writes one outcome
record before returning or raising; those records are the next router's labels.

This module routes a request and writes its record; the walks live beside it:
`ladder_run` (the plain ladder), `cascade_run` (the verifier's cascade), `streaming`
(unbuffered streams), each over `tier_call` (one tier's call and checks).
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack

from router.cascade import CascadeFile, CascadePolicy
from router.decision import Decision
from router.ladder import Ladder, Tier
from router.prompt_features import PromptFeatures
from router.verifier import Verifier

# The outcome names and error codes are re-exported (`X as X`): they were defined here.
from serving.attempts import ANSWERED as ANSWERED
from serving.attempts import ERROR as ERROR
from serving.attempts import FAILED as FAILED
from serving.attempts import (
    PASSED,
    Answered,
    Attempt,
    TieredClientError,
    TieredResponse,
    WalkResult,
)
from serving.attempts import REJECTED as REJECTED
from serving.attempts import UNAVAILABLE as UNAVAILABLE
from serving.cascade_run import Cascade, cascade_record, find_cascade, run_cascade
from serving.checks import Check, builtin_checks
from serving.client_config import TieredClientConfig, check_tags
from serving.conversation import StickyTiers
from serving.ladder_run import run_ladder
from serving.outcome_log import (
    NO_FEATURES_ROUTE_ERROR,
    NO_FEATURES_ROUTER,
    OutcomeLogger,
    PromptStorage,
    prompt_field,
)
from serving.outcome_record import (
    ACCEPTED,
    EXPLORE_NEXT,
    UNJUDGED,
    DecisionRecord,
    OutcomeLogRecord,
    Verdict,
)
from serving.pricing import Usage
from serving.request_plan import (
    ConverseOptions,
    RequestLike,
    RequestPlan,
    check_options,
    normalize_request,
)
from serving.routing import FixedTierRouter, RouterLike, load_router_or_failsafe
from serving.snapshot import BundleSnapshot, SnapshotCache
from serving.streaming import StreamDelta, StreamDone, failover_order, stream_live
from serving.tier_call import UNAVAILABLE_CODES as UNAVAILABLE_CODES
from serving.tier_call import TierCaller

log = logging.getLogger(__name__)

EXPLORE_THREADS = 4  # cascade exploration calls in flight at once, off the callers' path


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
        self._caller = TierCaller(self)
        self._failsafe = FixedTierRouter(self.ladder, self.config.failsafe_tier, "failsafe")
        self._sticky = StickyTiers(self.config.sticky_max_conversations, self.config.sticky_ttl_s)
        self._rng = random.Random(self.config.seed)
        self._rng_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._explorer: ThreadPoolExecutor | None = None  # cascade exploration calls
        self._closed = False
        if logger is not None:  # closing the log first still writes the explored records
            logger.before_close(self._drain)
        # Per request: one router snapshot and the cascade at the configured point built
        # from it (None routes the plain ladder). A swappable router also refuses a new
        # bundle lacking that point, so a swap never breaks the cascade mid-service.
        point = self.config.cascade_point if self.config.cascade else None
        self._snapshots = SnapshotCache(router, point)
        add_check = getattr(router, "add_check", None)
        if point is not None and callable(add_check):
            add_check(lambda new: find_cascade(new, point))

    def snapshot(self) -> BundleSnapshot:
        """The bundle (router, verifier, cascade) the next request is served by."""
        return self._snapshots.current()

    @property
    def cascade(self) -> Cascade | None:
        return self.snapshot().cascade

    @property
    def cascade_file(self) -> CascadeFile | None:
        return self.cascade.file if self.cascade else None

    @property
    def verifier(self) -> Verifier | None:
        return self.cascade.verifier if self.cascade else None

    @property
    def cascade_policy(self) -> CascadePolicy | None:
        return self.cascade.policy if self.cascade else None

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
    def converse(self, request: RequestLike, **options: Unpack[ConverseOptions]) -> TieredResponse:
        """Answer `request` (a prompt, a message list, or a ConverseRequest) on the cheapest
        tier that passes; `options` are ConverseOptions (system, tool_config,
        conversation_id, tags, checks, request_id). Raises RequestError for a malformed
        request, TieredClientError only when no model could answer; logs an outcome
        record either way.

        A turn that ends in `stopReason: tool_use` is an answer, not a failure: it is not
        escalated, and the cascade verifier does not judge it (the caller runs the tool and
        sends the result in the next turn, with the same `conversation_id`)."""
        check_options(options, "TieredClient.converse")
        return self._complete(self._prepare(request, options), stream=False)[0]

    def converse_stream(
        self, request: RequestLike, *, verify: bool = False, **options: Unpack[ConverseOptions]
    ) -> Generator[StreamDelta | StreamDone, None, None]:
        """Route, then stream the tier's answer through Bedrock ConverseStream: yields a
        StreamDelta per text delta as it arrives, then one StreamDone (response with usage
        and cost, and the outcome record, which is logged before it is yielded). `options`
        are those of `converse`.

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
        check_options(options, "TieredClient.converse_stream")
        # Validated and routed on the call, so a bad request raises here, not on first read.
        return self._stream(self._prepare(request, options), verify)

    def _stream(
        self, plan: RequestPlan, verify: bool
    ) -> Generator[StreamDelta | StreamDone, None, None]:
        if verify:
            response, record = self._complete(plan, stream=True)
            for piece in response.deltas:
                yield StreamDelta(piece)
            yield StreamDone(response, record)
            return

        def finish(
            attempts: list[Attempt], final: Answered | None, stream: dict[str, Any]
        ) -> tuple[TieredResponse, dict[str, Any]]:
            return self._finish(plan, WalkResult(attempts, final), stream)

        yield from stream_live(
            self._caller,
            failover_order(self.ladder, self.config, plan.start),
            plan.req.to_bedrock(self.config.prompt_caching),
            plan.text,
            plan.checks,
            finish,
        )

    # ------------------------------------------------------------ one request
    def _prepare(self, request: RequestLike, options: ConverseOptions) -> RequestPlan:
        """Validate, route, apply the sticky pin and exploration: where the walk starts."""
        t0 = time.perf_counter()
        req = normalize_request(request, options.get("system"), options.get("tool_config"))
        call_tags = {**self.config.tags, **(options.get("tags") or {})}
        check_tags(call_tags, "tags")
        rid = options.get("request_id") or uuid.uuid4().hex
        text = req.routing_text()
        snap = self.snapshot()  # one bundle for the decision, the verifier and the walk
        decision, route_error, features, no_features = self._decide(snap.router, text)
        cascade = snap.cascade if route_error is None else None
        p_router = [float(decision.p_pass[n]) for n in self.ladder.names] if cascade else []
        if cascade is not None:
            costs = cascade.file.cost.start_costs(len(text))
            start = cascade.policy.start_tier(p_router, costs)
            start_reason = _cascade_start_reason(cascade.policy.label, costs, cascade)
        else:
            start = decision.tier_index
            start_reason = "router decision" if route_error is None else "fail-safe tier"
        sticky = False
        pinned_index: int | None = None
        conversation_id = options.get("conversation_id")
        if conversation_id is not None:
            pinned = self._sticky.get(conversation_id)
            if pinned is not None and pinned in self.ladder.names:
                # Routed once, on the first turn; later turns start where it is (never lower).
                start, sticky = self.ladder.index(pinned), True
                pinned_index = start
                start_reason = f"sticky: conversation is on {pinned}"
        exploration = None if sticky else self._explore(start)
        if exploration is not None and exploration["explored"]:
            start -= 1
            start_reason += "; exploration: one tier below"
        all_checks = (builtin_checks() if self.config.use_builtin_checks else ()) + self.checks
        all_checks += tuple(options.get("checks", ()))
        return RequestPlan(
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
            start_reason,
            features,
            no_features,
        )

    def _complete(self, plan: RequestPlan, stream: bool) -> tuple[TieredResponse, dict[str, Any]]:
        """The whole policy (cascade or ladder walk) for one request, then its record."""

        def call(
            tier: Tier, idx: int | None, role: str, checks: tuple[Check, ...]
        ) -> Answered | Attempt:
            return self._caller.attempt(tier, idx, role, plan.req, plan.text, checks, stream)

        explore = None
        if plan.cascade is not None:
            walked = run_cascade(call, self.ladder, self.config, plan)
            explore = None if stream else self._cascade_explore(walked)
        else:
            walked = run_ladder(call, self.ladder, self.config, plan.start, plan.checks)
        return self._finish(plan, walked, {"verify": True} if stream else None, explore)

    def _finish(
        self,
        plan: RequestPlan,
        walked: WalkResult,
        stream: Mapping[str, Any] | None,
        explore: tuple[dict[str, Any], int | None] | None = None,
    ) -> tuple[TieredResponse, dict[str, Any]]:
        """Write the outcome record (always: now, or after the cascade's exploration call,
        which runs off the caller's path), then return the response or raise."""
        decision, rid = plan.decision, plan.request_id
        attempts, final, escalations = walked.attempts, walked.final, walked.escalations
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
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        block, nxt = explore if explore is not None else (None, None)
        record = self._record(plan, walked, attempts, stream, now, latency_ms, block)
        if nxt is not None and self.logger is not None:
            self._submit(lambda: self._explore_then_log(plan, walked, now, latency_ms, block, nxt))
        elif self.logger is not None:
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

    def _record(
        self,
        plan: RequestPlan,
        walked: WalkResult,
        attempts: Sequence[Attempt],
        stream: Mapping[str, Any] | None,
        now: str,
        latency_ms: float,
        explore: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The request's outcome record, built once from what the walk did."""
        decision, final = plan.decision, walked.final
        ok = final is not None and final.attempt.outcome == PASSED
        cascade = cascade_record(
            plan.cascade.policy if plan.cascade else None, walked.walked, self.ladder
        )
        if cascade is not None and explore is not None:
            cascade["explore"] = dict(explore)
        return OutcomeLogRecord(
            request_id=plan.request_id,
            attempts=tuple(a.record() for a in attempts),
            time=now,
            router_version=decision.router_version,
            decision=DecisionRecord(
                decision.tier, decision.tier_index, dict(decision.p_pass), decision.reason
            ),
            route_error=plan.route_error,
            start_tier=self.ladder.tiers[plan.start].name,
            start_reason=plan.start_reason,
            conversation_id=plan.conversation_id,
            sticky=plan.sticky,
            turns=len(plan.req.messages),
            exploration=plan.exploration,
            final_tier=final.attempt.tier if final else None,
            final_model_id=final.attempt.model_id if final else None,
            final_stop_reason=final.stop_reason if final else None,
            ok=ok,
            failure_reason=None if ok else (final.attempt.reason if final else "no_answer"),
            escalations=walked.escalations,
            stopped_by_max_escalations=walked.stopped_on_quality,
            cascade=cascade,
            usage=sum((a.usage for a in attempts), Usage()).to_dict(),
            cost_usd=sum(a.cost_usd for a in attempts),
            latency_ms=round(latency_ms, 3),
            tags=plan.tags,
            prompt=prompt_field(
                plan.text,
                self.config.prompt_storage,
                self.config.prompt_hash_key,
                plan.features,
                plan.no_features,
            ),
            stream=stream,
        ).to_dict()

    # ------------------------------------------------------- cascade exploration
    def _cascade_explore(self, walked: WalkResult) -> tuple[dict[str, Any], int | None] | None:
        """The record's `cascade.explore` block, and the tier to explore (None: not this
        request). Only an answer the verifier accepted below the top is explored: a rejected
        one was escalated anyway, and the top has no next tier."""
        rate = self.config.cascade_explore_rate
        w, final = walked.walked, walked.final
        if rate <= 0 or w is None:
            return None
        block: dict[str, Any] = {"rate": rate, "explored": False}
        nxt = None if w.final is None else w.final + 1
        v = final.attempt.verdict if final is not None else None
        if (
            nxt is None
            or nxt >= len(self.ladder)
            or v is None
            or v.kind != ACCEPTED
            or v.signal not in ("verifier", "agreement")
        ):
            return block, None
        with self._rng_lock:
            coin = self._rng.random() < rate
        if not coin:
            return block, None
        return {**block, "explored": True, "tier": self.ladder.names[nxt]}, nxt

    def _explore_then_log(
        self,
        plan: RequestPlan,
        walked: WalkResult,
        now: str,
        latency_ms: float,
        block: dict[str, Any] | None,
        nxt: int,
    ) -> None:
        """The explored next tier's answer, then the record with it (never lost: an error
        here logs the record without the call, saying why)."""
        extra: list[Attempt] = []
        try:
            got = self._caller.attempt(
                self.ladder.tiers[nxt], nxt, EXPLORE_NEXT, plan.req, plan.text, plan.checks
            )
            if isinstance(got, Answered):
                extra.append(replace(got.attempt, judged=Verdict(UNJUDGED, "exploration")))
            else:
                extra.append(got)
        except Exception as e:  # the record must still be written
            log.exception("cascade exploration call failed")
            block = {**(block or {}), "error": f"{type(e).__name__}: {e}"}
        rec = self._record(plan, walked, [*walked.attempts, *extra], None, now, latency_ms, block)
        assert self.logger is not None
        self.logger.write(rec)

    def _submit(self, job: Callable[[], None]) -> None:
        """Run `job` on the exploration threads (inline once the client is closed)."""
        with self._pool_lock:
            if self._explorer is None and not self._closed:
                self._explorer = ThreadPoolExecutor(
                    max_workers=EXPLORE_THREADS, thread_name_prefix="tier-router-explore"
                )
            pool = self._explorer
        if pool is None:
            job()
            return
        try:
            pool.submit(job)
        except RuntimeError:  # shut down between the check and the submit
            job()

    def close(self) -> None:
        """Wait for the exploration calls in flight and write their records. The client
        stays usable (later explorations run inline); closing its logger does this too."""
        with self._pool_lock:
            self._closed = True
        self._drain()

    def _drain(self) -> None:
        """Wait for the exploration calls in flight (a new pool starts if not closed)."""
        with self._pool_lock:
            pool, self._explorer = self._explorer, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> TieredClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- routing
    def _decide(
        self, router: RouterLike, text: str
    ) -> tuple[Decision, str | None, PromptFeatures | None, str | None]:
        """(decision, route error, prompt features, why no features). The features are
        asked for only under prompt_storage=features, from the same computation as the
        decision (`route_with_features`), so logging them costs no second featurization."""
        want = self.config.prompt_storage is PromptStorage.FEATURES
        with_features = getattr(router, "route_with_features", None) if want else None
        features: PromptFeatures | None = None
        no_features: str | None = None
        try:
            if with_features is not None:
                d, features = with_features(text)
                if features is None:
                    no_features = getattr(router, "features_note", None) or NO_FEATURES_ROUTER
            else:
                d = router.route(text)
                no_features = NO_FEATURES_ROUTER if want else None
            if not 0 <= d.tier_index < len(self.ladder):
                raise ValueError(f"router returned tier_index {d.tier_index}")
            return d, None, features, no_features
        except Exception as e:  # a broken router must not take serving down
            log.exception("router failed; using fail-safe tier")
            why = NO_FEATURES_ROUTE_ERROR if want else None
            return self._failsafe.route(text), f"{type(e).__name__}: {e}", None, why

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


def _cascade_start_reason(point: str, costs: list[float], cascade: Cascade) -> str:
    """Why the cascade starts where it does, next to the router's own decision."""
    if cascade.policy.start_lambda >= 0 and costs:
        lam = cascade.policy.start_lambda
        return f"cascade start ({point}): best P(pass) - {lam:g} x predicted cost"
    return f"cascade start ({point}): first tier whose router P(pass) clears its threshold"
