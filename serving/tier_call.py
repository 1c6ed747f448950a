"""One tier, one call: Bedrock Converse (whole, or ConverseStream read whole) on a tier's
model, then the explicit checks and the self-check on its answer.

Nothing here raises for Bedrock's errors: a call that gave no answer becomes an Attempt
saying why, so the walks above only decide where to go next.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from router.inference import inference_config
from router.ladder import Tier
from serving.attempts import ERROR, FAILED, PASSED, UNAVAILABLE, Answered, Attempt
from serving.checks import TOOL_USE, Answer, Check, parse_verdict
from serving.client_config import TieredClientConfig
from serving.conversation import ConverseRequest, message_text
from serving.outcome_log import answer_field
from serving.pricing import Usage, cost_usd

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

# call(tier, ladder index or None, role, checks): one attempt of a request on `tier`.
CallTier = Callable[[Tier, int | None, str, tuple[Check, ...]], "Answered | Attempt"]
# A stream that started: its first event, and the rest.
Opened = tuple[Mapping[str, Any], Generator[Mapping[str, Any], None, None]]


def _closing_events(stream: Any) -> Generator[Mapping[str, Any], None, None]:
    """The stream's events; the EventStream (its HTTP connection) is closed when they end,
    break, or the generator is closed, so a stream left half-read frees its connection."""
    try:
        yield from stream
    finally:
        _close_stream(stream)


def _close_stream(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # closing is best effort: the record matters more
            log.debug("closing an event stream failed", exc_info=True)


@dataclass(frozen=True)
class CallFailure:
    """A call (or a stream's start) that gave no response, and why."""

    outcome: str
    code: str | None
    reason: str


@dataclass(frozen=True)
class Called:
    """One Converse call as it came back: the response, or why there is none."""

    resp: dict[str, Any] | CallFailure
    usage: Usage
    latency_ms: float
    deltas: tuple[str, ...] = ()


def call_failure(e: Exception, doing: str, model_id: str) -> CallFailure:
    """What an exception from a Bedrock call means for failover; logs an unexpected one."""
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", "ClientError"))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        outcome = UNAVAILABLE if code in UNAVAILABLE_CODES or status >= 500 else ERROR
        return CallFailure(outcome, code, f"{code} (HTTP {status})")
    if isinstance(e, BotoCoreError):
        return CallFailure(UNAVAILABLE, type(e).__name__, f"{type(e).__name__}: {e}"[:300])
    log.exception("unexpected error %s %s", doing, model_id)
    return CallFailure(ERROR, type(e).__name__, str(e)[:300])


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


class StreamAssembler:
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


class CallSettings(Protocol):
    """Where a TierCaller finds its Bedrock client and config: the TieredClient's own
    attributes, read on every call."""

    bedrock: Any
    config: TieredClientConfig


class TierCaller:
    """Calls one tier for a request and judges what came back. Thread-safe."""

    def __init__(self, settings: CallSettings) -> None:
        self.settings = settings

    def attempt(
        self,
        tier: Tier,
        idx: int | None,
        role: str,
        req: ConverseRequest,
        text: str,
        checks: tuple[Check, ...],
        stream: bool = False,
    ) -> Answered | Attempt:
        """One tier: call it (whole, or streamed and buffered), then check the answer.
        An Attempt alone means no answer."""
        body = req.to_bedrock(self.settings.config.prompt_caching)
        called = self._call_streamed(tier, body) if stream else self._call(tier, body)
        if isinstance(called.resp, CallFailure):
            f = called.resp
            return self.unanswered(
                tier, role, f.outcome, f.reason, called.usage, called.latency_ms, f.code
            )
        return self.judge(
            tier, role, called.resp, text, checks, called.latency_ms, called.deltas, idx
        )

    def unanswered(
        self,
        tier: Tier,
        role: str,
        outcome: str,
        reason: str,
        usage: Usage,
        latency_ms: float,
        code: str | None = None,
    ) -> Attempt:
        """The attempt of a call that gave no answer (what it used is still paid for)."""
        cost = cost_usd(tier, usage, self.settings.config.cache_pricing)
        return Attempt(
            tier.name, tier.model_id, role, outcome, reason, None, usage, cost, latency_ms, code
        )

    def judge(
        self,
        tier: Tier,
        role: str,
        resp: Mapping[str, Any],
        text: str,
        checks: tuple[Check, ...],
        latency_ms: float,
        deltas: Sequence[str] = (),
        idx: int | None = None,
    ) -> Answered | Attempt:
        """Explicit checks (and the self-check) on one tier's response."""
        usage = Usage.from_bedrock(resp.get("usage"))
        try:
            message = resp["output"]["message"]
            stop_reason = str(resp.get("stopReason", ""))
            answer_text = message_text(message)
        except (KeyError, TypeError):
            return self.unanswered(tier, role, ERROR, "bad_response", usage, latency_ms)
        cost = cost_usd(tier, usage, self.settings.config.cache_pricing)
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
            and self.settings.config.self_check.enabled
            and stop_reason != TOOL_USE
        ):
            self_check, sc_usage, sc_latency = self._self_check(tier, text, answer_text)
            usage = usage + sc_usage
            cost += cost_usd(tier, sc_usage, self.settings.config.cache_pricing)
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
            answer_field(
                answer_text,
                self.settings.config.prompt_storage,
                self.settings.config.prompt_hash_key,
            ),
        )
        return Answered(attempt, answer_text, message, stop_reason, tuple(deltas))

    def open_stream(self, tier: Tier, body: dict[str, Any]) -> Opened | CallFailure:
        """Start ConverseStream on `tier` and read its first event (botocore retries the
        start); (first event, the rest), or why it did not start."""
        stream: Any = None
        try:
            resp = self.settings.bedrock.converse_stream(
                modelId=tier.model_id, **_params(tier), **body
            )
            stream = resp["stream"]
            events = _closing_events(stream)
            first = next(events)
        except StopIteration:
            return CallFailure(ERROR, "EmptyStream", "the stream ended before its first event")
        except Exception as e:
            _close_stream(stream)
            return call_failure(e, "streaming from", tier.model_id)
        return first, events

    def _call(self, tier: Tier, body: dict[str, Any]) -> Called:
        """Bedrock Converse on `tier` (botocore retries inside). Never raises."""
        t = time.perf_counter()
        try:
            resp = self.settings.bedrock.converse(modelId=tier.model_id, **_params(tier), **body)
        except Exception as e:
            return Called(call_failure(e, "calling", tier.model_id), Usage(), ms_since(t))
        return Called(resp, Usage.from_bedrock(resp.get("usage")), ms_since(t))

    def _call_streamed(self, tier: Tier, body: dict[str, Any]) -> Called:
        """ConverseStream on `tier`, read whole (buffered verification). Never raises."""
        t = time.perf_counter()
        opened = self.open_stream(tier, body)
        if isinstance(opened, CallFailure):
            return Called(opened, Usage(), ms_since(t))
        first, events = opened
        asm = StreamAssembler()
        try:
            with contextlib.closing(events):
                for event in itertools.chain((first,), events):
                    asm.feed(event)
        except (ClientError, BotoCoreError) as e:
            broken = CallFailure(UNAVAILABLE, type(e).__name__, f"stream_broken: {e}"[:300])
            return Called(broken, Usage.from_bedrock(asm.usage), ms_since(t))
        resp = asm.response()
        return Called(resp, Usage.from_bedrock(resp["usage"]), ms_since(t), tuple(asm.deltas))

    def _self_check(
        self, tier: Tier, prompt: str, answer: str
    ) -> tuple[dict[str, Any], Usage, float]:
        sc = self.settings.config.self_check
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
        called = self._call(grading, body)
        if isinstance(called.resp, CallFailure):
            return (
                {"verdict": "error", "error_code": called.resp.code},
                called.usage,
                called.latency_ms,
            )
        try:
            verdict = parse_verdict(message_text(called.resp["output"]["message"]))
        except (KeyError, TypeError):
            verdict = None
        label = {True: "pass", False: "fail", None: "inconclusive"}[verdict]
        return {"verdict": label, "usage": called.usage.to_dict()}, called.usage, called.latency_ms


def _params(tier: Tier) -> dict[str, Any]:
    """The tier's inference settings and extra model fields, as Converse takes them."""
    out: dict[str, Any] = {"inferenceConfig": inference_config(tier)}
    if tier.additional_request_fields:
        out["additionalModelRequestFields"] = dict(tier.additional_request_fields)
    return out
