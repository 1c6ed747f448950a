"""A model's answer as graders see it, built from a Converse or an Anthropic-messages
response (on-demand and batch return different shapes for the same thing)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelAnswer:
    text: str
    stop_reason: str
    input_tokens: int
    output_tokens: int

    @classmethod
    def from_converse(cls, resp: Mapping[str, Any]) -> ModelAnswer:
        content = resp.get("output", {}).get("message", {}).get("content", [])
        usage = resp.get("usage", {})
        return cls(
            text="".join(b.get("text", "") for b in content if isinstance(b, dict)),
            stop_reason=str(resp.get("stopReason", "")),
            input_tokens=int(usage.get("inputTokens", 0))
            + int(usage.get("cacheReadInputTokens", 0))
            + int(usage.get("cacheWriteInputTokens", 0)),
            output_tokens=int(usage.get("outputTokens", 0)),
        )

    @classmethod
    def from_anthropic(cls, body: Mapping[str, Any]) -> ModelAnswer:
        content = body.get("content", [])
        usage = body.get("usage", {})
        return cls(
            text="".join(
                b.get("text", "")
                for b in content
                if isinstance(b, dict) and b.get("type", "text") == "text"
            ),
            stop_reason=str(body.get("stop_reason", "")),
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
        )


_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.M)
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is\s*[:\uff1a]?|[:\uff1a])\s*(.+?)\s*$", re.I | re.M
)


def final_answer(text: str) -> str:
    """The part of a long answer that states the result: the last `\\boxed{}`, `#### x`,
    or `answer is / Answer:` line, else the last non-empty line."""
    for pattern in (_BOXED, _HASHES, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return str(found[-1]).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
