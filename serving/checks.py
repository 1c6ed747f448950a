"""Answer checks that decide whether to escalate, none of which costs a model call.

A check returns None when the answer is acceptable, or a short reason string
(logged, and the escalation's label) when it is not. Built-in checks catch what
Bedrock tells us (stop reasons), empty output and explicit refusals or "I don't
know"; callers add a JSON schema, a regex or any Python callable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Bedrock stop reasons that mean the answer is cut off, blocked or broken.
ESCALATING_STOP_REASONS = frozenset(
    {"max_tokens", "guardrail_intervened", "content_filtered", "malformed_model_output"}
)

# A turn that asks for a tool call: the answer comes in a later turn, so it is not a failure.
TOOL_USE = "tool_use"

# Refusals and admissions of not knowing, looked for near the start of an answer,
# where a model says them; deeper in a long answer such phrases are usually content.
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"^\W*(?:I['\u2019]m|I am)\s+(?:sorry|afraid)\b[^.]*"
    r"\b(?:can['\u2019]?t|cannot|unable|not able)\b",
    r"^\W*I\s+(?:can['\u2019]?t|cannot|won['\u2019]t|am unable to|['\u2019]m unable to)\s+"
    r"(?:help|assist|comply|provide|answer|do that|fulfil)",
    r"\bI['\u2019]?m\s+not\s+(?:sure|certain)\b",
    r"\bI\s+am\s+not\s+(?:sure|certain)\b",
    r"\bI\s+do(?:n['\u2019]?t| not)\s+know\b",
    r"\bI\s+(?:have no idea|cannot determine|can['\u2019]t determine)\b",
    r"^\W*As an AI\b[^.]*\b(?:can['\u2019]?t|cannot|unable)\b",
)


@dataclass(frozen=True)
class Answer:
    """What a check sees: the model's text and how the call ended, plus the request."""

    text: str
    stop_reason: str
    tier: str
    model_id: str
    prompt: str
    message: Mapping[str, Any] = field(default_factory=dict)


class Check(Protocol):
    """Returns None if `answer` is acceptable, else the reason to escalate."""

    @property
    def name(self) -> str: ...

    def __call__(self, answer: Answer) -> str | None: ...


@dataclass(frozen=True)
class StopReasonCheck:
    """Escalate when Bedrock says the answer was truncated, blocked or malformed."""

    fail_on: frozenset[str] = ESCALATING_STOP_REASONS
    name: str = "stop_reason"

    def __call__(self, answer: Answer) -> str | None:
        if answer.stop_reason in self.fail_on:
            return f"stop_reason:{answer.stop_reason}"
        return None


@dataclass(frozen=True)
class EmptyCheck:
    """Escalate an answer with no visible text."""

    name: str = "empty"

    def __call__(self, answer: Answer) -> str | None:
        if answer.stop_reason == TOOL_USE:  # a tool call may carry no text at all
            return None
        return "empty" if not answer.text.strip() else None


class RefusalCheck:
    """Escalate explicit refusals and "I'm not sure / I don't know" answers.

    Only the first `window` characters are searched: that is where models refuse or
    hedge, and it keeps a long, good answer that quotes such a phrase from escalating.
    """

    name = "refusal"

    def __init__(self, patterns: Iterable[str] = DEFAULT_REFUSAL_PATTERNS, window: int = 300):
        if window < 1:
            raise ValueError(f"RefusalCheck window must be >= 1, got {window}")
        self._patterns = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in patterns]
        self._window = window

    def __call__(self, answer: Answer) -> str | None:
        if answer.stop_reason == TOOL_USE:  # "I don't know the rate, let me look it up"
            return None
        head = answer.text[: self._window]
        for p in self._patterns:
            if p.search(head):
                return "refusal"
        return None


def builtin_checks() -> tuple[Check, ...]:
    """The checks every answer gets unless the caller turns them off."""
    return (StopReasonCheck(), EmptyCheck(), RefusalCheck())


class RegexCheck:
    """The answer must (or, with `must_match=False`, must not) contain a match."""

    def __init__(self, pattern: str, must_match: bool = True, name: str = "regex") -> None:
        try:
            self._re = re.compile(pattern, re.DOTALL)
        except re.error as e:
            raise ValueError(f"RegexCheck: invalid pattern {pattern!r}: {e}") from None
        self._must_match = must_match
        self.name = name

    def __call__(self, answer: Answer) -> str | None:
        found = self._re.search(answer.text) is not None
        if found != self._must_match:
            return f"{self.name}:{'no_match' if self._must_match else 'forbidden_match'}"
        return None


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


class JsonSchemaCheck:
    """The answer must be JSON (a ```json fence is tolerated) valid against a schema."""

    def __init__(self, schema: Mapping[str, Any], name: str = "json_schema") -> None:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as e:
            raise ValueError(f"JsonSchemaCheck: invalid schema: {e.message}") from None
        self._validator = cls(schema)
        self.name = name

    def __call__(self, answer: Answer) -> str | None:
        text = answer.text.strip()
        m = _FENCE.match(text)
        if m:
            text = m.group(1)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            return f"{self.name}:not_json"
        error = next(iter(self._validator.iter_errors(doc)), None)
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path) or "<root>"
            return f"{self.name}:invalid_at:{path}"
        return None


class CallableCheck:
    """Wrap a caller's function: it returns True (pass), False, or a failure reason string."""

    def __init__(self, fn: Callable[[Answer], bool | str | None], name: str | None = None):
        if not callable(fn):
            raise ValueError(f"CallableCheck needs a callable, got {fn!r}")
        self._fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "callable"))

    def __call__(self, answer: Answer) -> str | None:
        out = self._fn(answer)
        if out is True or out is None:
            return None
        if out is False:
            return f"callable:{self.name}"
        return f"callable:{self.name}:{out}"


@dataclass(frozen=True)
class SelfCheckConfig:
    """Ask the cheapest tier to grade its own answer with a short rubric (off by default).

    The grading call's tokens and dollars are added to the attempt it grades.
    """

    enabled: bool = False
    max_tokens: int = 8
    rubric: str = (
        "You are grading an answer. Reply with exactly one word: PASS if the answer "
        "fully and correctly addresses the request, FAIL otherwise.\n\n"
        "<request>\n{prompt}\n</request>\n\n<answer>\n{answer}\n</answer>\n\nVerdict:"
    )

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"SelfCheckConfig.max_tokens must be >= 1, got {self.max_tokens}")
        if "{prompt}" not in self.rubric or "{answer}" not in self.rubric:
            raise ValueError("SelfCheckConfig.rubric must contain {prompt} and {answer}")

    def render(self, prompt: str, answer: str) -> str:
        return self.rubric.replace("{prompt}", prompt).replace("{answer}", answer)


def parse_verdict(text: str) -> bool | None:
    """PASS -> True, FAIL -> False, anything else -> None (inconclusive)."""
    words = re.findall(r"[A-Za-z]+", text.upper())
    for w in words:
        if w == "PASS":
            return True
        if w == "FAIL":
            return False
    return None
