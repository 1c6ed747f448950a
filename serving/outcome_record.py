"""The outcome-log record: one typed definition for the writer and every reader.

`TieredClient` builds an `OutcomeLogRecord` per request and logs `to_dict()`; the
readers (feedback, retrain, the monitor) parse lines back with `from_dict`, which
checks types and fills fields an older writer did not have with their defaults, so a
log format change is made here once. What a record says about answer quality (the
labelling rules) is training/log_labels.py's: serving only writes what it observed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.prompt_features import PromptFeatures

SCHEMA = "tier-router.outcome/1"
_SCHEMA_FAMILY = "tier-router.outcome/"

# The role of the cascade's exploration call: after the walk accepted an answer below the
# top, the next tier answered too (off the caller's path), at the logged rate.
EXPLORE_NEXT = "explore_next"

# Attempt outcomes that are quality observations (the label); the others say nothing about
# the answer: rejected is the verifier's prediction, unavailable/error mean no answer.
QUALITY_OUTCOMES = {"passed": 1.0, "failed": 0.0}


class NotAnOutcomeRecord(ValueError):
    """A JSON object that is not a tier-router outcome record; the message says why."""


def _get(d: Mapping[str, Any], key: str, types: type | tuple[type, ...], default: Any) -> Any:
    """d[key] if it has one of `types`; `default` when missing or null; else raise."""
    v = d.get(key)
    if v is None:
        return default
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise NotAnOutcomeRecord(f"field {key!r}: expected {types}, got {v!r}")
    if not isinstance(v, types):
        raise NotAnOutcomeRecord(f"field {key!r}: expected {types}, got {type(v).__name__}")
    return v


_NUM = (int, float)


def _numbers(d: Mapping[str, Any], key: str) -> dict[str, int | float]:
    """A token-count object: its numeric entries (a mapping is required when present)."""
    raw = _get(d, key, dict, {})
    return {k: v for k, v in raw.items() if isinstance(v, _NUM) and not isinstance(v, bool)}


# What the walk concluded about one call's answer, and on what evidence (`Verdict`).
ACCEPTED, REJECTED_VERDICT, UNJUDGED, FAILED_CALL = "accepted", "rejected", "unjudged", "failed"
VERDICT_KINDS = (ACCEPTED, REJECTED_VERDICT, UNJUDGED, FAILED_CALL)
VERDICT_SIGNALS = (
    "explicit_check",  # the client's checks passed / failed the answer
    "verifier",  # the verifier's P(pass) alone (or with the tier below's answer)
    "agreement",  # the verifier's P(pass) with the second opinion's answer
    "second_opinion_unavailable",  # consulted, no second answer: escalated (or capped)
    "top_tier",  # the top tier's answer is returned as it is
    "call_cap",  # max_calls reached: returned as it is
    "tool_use",  # a tool call goes back to the caller unjudged
    "second_opinion",  # the second opinion's own answer: evidence, not a candidate
    "exploration",  # cascade exploration: the next tier's answer, called after the walk
    "unavailable",  # no answer (throttled past retries, 5xx, unavailable)
    "error",  # the call or a check errored
)


@dataclass(frozen=True)
class Verdict:
    """What the walk concluded about one call's answer and by which signal.

    `accepted` means the walk returned or kept the answer, not that it passed: only an
    explicit check (or graded feedback) is a ground-truth label; a verifier's verdict is
    a prediction, logged as evidence."""

    kind: str  # accepted | rejected | unjudged | failed
    signal: str

    def __post_init__(self) -> None:
        if self.kind not in VERDICT_KINDS:
            raise ValueError(f"verdict kind {self.kind!r} is not one of {VERDICT_KINDS}")
        if self.signal not in VERDICT_SIGNALS:
            raise ValueError(f"verdict signal {self.signal!r} is not one of {VERDICT_SIGNALS}")

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "signal": self.signal}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        try:
            return cls(str(d.get("kind")), str(d.get("signal")))
        except ValueError as e:
            raise NotAnOutcomeRecord(f"attempt verdict: {e}") from None


@dataclass(frozen=True)
class AttemptRecord:
    """One model call of a request as logged: which tier, in what role, what came of it."""

    tier: str
    model_id: str
    role: str  # decided | escalation | failover | fallback | failover_down | ...
    outcome: str  # passed | failed | rejected | answered | unavailable | error
    reason: str | None = None
    stop_reason: str | None = None
    usage: Mapping[str, int | float] = field(default_factory=dict)
    cost_usd: float | None = None
    latency_ms: float | None = None
    error_code: str | None = None
    self_check: Mapping[str, Any] | None = None
    verifier: Mapping[str, Any] | None = None
    answer: Mapping[str, Any] | None = None  # {"storage": store|hash|drop, ...}
    verdict: Verdict | None = None  # absent in logs written before verdicts were typed

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "tier": self.tier,
            "model_id": self.model_id,
            "role": self.role,
            "outcome": self.outcome,
            "reason": self.reason,
            "stop_reason": self.stop_reason,
            "usage": dict(self.usage),
            "cost_usd": self.cost_usd,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
        }
        if self.error_code is not None:
            d["error_code"] = self.error_code
        if self.self_check is not None:
            d["self_check"] = dict(self.self_check)
        if self.verifier is not None:
            d["verifier"] = dict(self.verifier)
        if self.answer is not None:
            d["answer"] = dict(self.answer)
        if self.verdict is not None:
            d["verdict"] = self.verdict.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any) -> AttemptRecord:
        if not isinstance(d, dict):
            raise NotAnOutcomeRecord(f"attempt: expected an object, got {type(d).__name__}")
        cost = _get(d, "cost_usd", _NUM, None)
        latency = _get(d, "latency_ms", _NUM, None)
        return cls(
            tier=_get(d, "tier", str, ""),
            model_id=_get(d, "model_id", str, ""),
            role=_get(d, "role", str, ""),
            outcome=_get(d, "outcome", str, ""),
            reason=_get(d, "reason", str, None),
            stop_reason=_get(d, "stop_reason", str, None),
            usage=_numbers(d, "usage"),
            cost_usd=None if cost is None else float(cost),
            latency_ms=None if latency is None else float(latency),
            error_code=_get(d, "error_code", str, None),
            self_check=_get(d, "self_check", dict, None),
            verifier=_get(d, "verifier", dict, None),
            answer=_get(d, "answer", dict, None),
            verdict=None if d.get("verdict") is None else Verdict.from_dict(
                _get(d, "verdict", dict, {})
            ),
        )

    @property
    def stored_answer(self) -> str | None:
        """The answer text when it was logged in full (prompt_storage=store)."""
        a = self.answer or {}
        text = a.get("text")
        return text if a.get("storage") == "store" and isinstance(text, str) else None


@dataclass(frozen=True)
class DecisionRecord:
    """The router's decision as logged: its tier and the per-tier P(pass) behind it."""

    tier: str | None = None
    tier_index: int | None = None
    p_pass: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "tier_index": self.tier_index,
            "p_pass": dict(self.p_pass),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DecisionRecord:
        p = _get(d, "p_pass", dict, {})
        return cls(
            tier=_get(d, "tier", str, None),
            tier_index=_get(d, "tier_index", int, None),
            p_pass={str(k): v for k, v in p.items() if isinstance(v, _NUM)},
            reason=_get(d, "reason", str, None),
        )


@dataclass(frozen=True)
class OutcomeLogRecord:
    """One request as the outcome log holds it; `to_dict()` is the line's JSON object.

    Fields an older writer did not log default to "absent" (None, False, empty), so old
    logs stay readable; a present field of the wrong type is an error.
    """

    request_id: str
    attempts: tuple[AttemptRecord, ...]
    time: str | None = None
    router_version: str | None = None
    decision: DecisionRecord | None = None
    route_error: str | None = None
    start_tier: str | None = None
    # Why the walk started on `start_tier` (the cascade's start rule, a sticky pin,
    # exploration), which can differ from the router's `decision.tier`.
    start_reason: str | None = None
    conversation_id: str | None = None
    sticky: bool = False
    turns: int | None = None
    exploration: Mapping[str, Any] | None = None  # rate, explored, propensity, decided_tier
    final_tier: str | None = None
    final_model_id: str | None = None
    final_stop_reason: str | None = None
    ok: bool = False
    failure_reason: str | None = None
    escalations: int = 0
    stopped_by_max_escalations: bool = False
    cascade: Mapping[str, Any] | None = None  # point, calls, final_tier, judgements
    usage: Mapping[str, int | float] = field(default_factory=dict)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    tags: Mapping[str, str] = field(default_factory=dict)
    prompt: Mapping[str, Any] = field(default_factory=dict)  # serving.outcome_log.prompt_field
    stream: Mapping[str, Any] | None = None  # only streamed requests: {"verify": bool}
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": self.schema,
            "request_id": self.request_id,
            "time": self.time,
            "router_version": self.router_version,
            "decision": None if self.decision is None else self.decision.to_dict(),
            "route_error": self.route_error,
            "start_tier": self.start_tier,
            "start_reason": self.start_reason,
            "conversation_id": self.conversation_id,
            "sticky": self.sticky,
            "turns": self.turns,
            "exploration": None if self.exploration is None else dict(self.exploration),
            "attempts": [a.to_dict() for a in self.attempts],
            "final_tier": self.final_tier,
            "final_model_id": self.final_model_id,
            "final_stop_reason": self.final_stop_reason,
            "ok": self.ok,
            "failure_reason": self.failure_reason,
            "escalations": self.escalations,
            "stopped_by_max_escalations": self.stopped_by_max_escalations,
            "cascade": None if self.cascade is None else dict(self.cascade),
            "usage": dict(self.usage),
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "tags": dict(self.tags),
            "prompt": dict(self.prompt),
        }
        if self.stream is not None:
            d["stream"] = dict(self.stream)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> OutcomeLogRecord:
        """Parse one log line's object; raises NotAnOutcomeRecord when it is not one."""
        if not isinstance(d, dict):
            raise NotAnOutcomeRecord(f"expected a JSON object, got {type(d).__name__}")
        if not isinstance(d.get("request_id"), str):
            raise NotAnOutcomeRecord("no string 'request_id'")
        if not isinstance(d.get("attempts"), list):
            raise NotAnOutcomeRecord("no 'attempts' list")
        schema = _get(d, "schema", str, SCHEMA)
        if not schema.startswith(_SCHEMA_FAMILY):
            raise NotAnOutcomeRecord(f"schema {schema!r} is not {_SCHEMA_FAMILY}*")
        decision = _get(d, "decision", dict, None)
        rec = cls(
            schema=schema,
            request_id=d["request_id"],
            attempts=tuple(AttemptRecord.from_dict(a) for a in d["attempts"]),
            time=_get(d, "time", str, None),
            router_version=_get(d, "router_version", str, None),
            decision=None if decision is None else DecisionRecord.from_dict(decision),
            route_error=_get(d, "route_error", str, None),
            start_tier=_get(d, "start_tier", str, None),
            start_reason=_get(d, "start_reason", str, None),
            conversation_id=_get(d, "conversation_id", str, None),
            sticky=_get(d, "sticky", bool, False),
            turns=_get(d, "turns", int, None),
            exploration=_get(d, "exploration", dict, None),
            final_tier=_get(d, "final_tier", str, None),
            final_model_id=_get(d, "final_model_id", str, None),
            final_stop_reason=_get(d, "final_stop_reason", str, None),
            ok=_get(d, "ok", bool, False),
            failure_reason=_get(d, "failure_reason", str, None),
            escalations=_get(d, "escalations", int, 0),
            stopped_by_max_escalations=_get(d, "stopped_by_max_escalations", bool, False),
            cascade=_get(d, "cascade", dict, None),
            usage=_numbers(d, "usage"),
            cost_usd=float(_get(d, "cost_usd", _NUM, 0.0)),
            latency_ms=float(_get(d, "latency_ms", _NUM, 0.0)),
            tags=_get(d, "tags", dict, {}),
            prompt=_get(d, "prompt", dict, {}),
            stream=_get(d, "stream", dict, None),
        )
        _ = rec.prompt_features  # a malformed features field is no record: checked here
        return rec

    @property
    def prompt_storage(self) -> str | None:
        s = self.prompt.get("storage")
        return s if isinstance(s, str) else None

    @property
    def prompt_text(self) -> str | None:
        """The prompt, when it was logged in full; hashed or dropped prompts have none."""
        text = self.prompt.get("text")
        return text if self.prompt_storage == "store" and isinstance(text, str) else None

    @property
    def prompt_chars(self) -> int | None:
        """The prompt's length in characters (every storage logs it or the text)."""
        text = self.prompt_text
        if text is not None:
            return len(text)
        n = self.prompt.get("chars")
        return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None

    @functools.cached_property
    def prompt_features(self) -> PromptFeatures | None:
        """The router's features of the prompt (prompt_storage=features), decoded: the
        featurizer digest and the float32 embedding and hand features, bit for bit as the
        router computed them. None when the record has none (another storage, or a
        features record whose router could not give them: `prompt_features_reason`).
        Raises NotAnOutcomeRecord for a malformed field (from_dict checks it)."""
        if self.prompt_storage != "features" or self.prompt.get("features") is None:
            return None
        try:
            return PromptFeatures.from_log(self.prompt["features"])
        except ValueError as e:
            raise NotAnOutcomeRecord(f"field 'prompt': {e}") from None

    @property
    def prompt_features_reason(self) -> str | None:
        """Why a prompt_storage=features record carries no features (None: it does, or
        the record is of another storage)."""
        if self.prompt_storage != "features" or self.prompt.get("features") is not None:
            return None
        why = self.prompt.get("reason")
        return why if isinstance(why, str) else "unknown"

    @property
    def explored(self) -> bool:
        return bool((self.exploration or {}).get("explored"))

    @property
    def propensity(self) -> float:
        """P(this start tier | the decision) under the client's exploration; 1 without it."""
        p = (self.exploration or {}).get("propensity")
        if isinstance(p, int | float) and not isinstance(p, bool) and 0 < p <= 1:
            return float(p)
        return 1.0

    @property
    def cascade_explore(self) -> Mapping[str, Any] | None:
        """The cascade's exploration block ({rate, explored, tier}), when exploration was on."""
        got = (self.cascade or {}).get("explore")
        return got if isinstance(got, dict) else None

    @property
    def cascade_explore_rate(self) -> float:
        """The rate at which an accepted answer was also answered by the next tier (0: off)."""
        r = (self.cascade_explore or {}).get("rate")
        ok = isinstance(r, int | float) and not isinstance(r, bool) and 0 < r <= 1
        return float(r) if ok else 0.0  # type: ignore[arg-type]
