"""Requests as Converse message lists, the text a router sees, and sticky tiers.

A multi-turn request is routed on the whole conversation (a follow-up "and why?"
is only as hard as what came before). A conversation id pins the conversation to
the tier it is on, so Bedrock's prompt cache, which is per model, keeps hitting.

Agents: `toolConfig` and the toolUse / toolResult blocks of earlier turns go to every
tier unchanged. An agent conversation is routed once, on its first turn; later turns
start on the pinned tier and may escalate (the pin moves up), never down mid-task.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_ROLES = ("user", "assistant")


class RequestError(ValueError):
    """The caller's request is malformed; raised before anything is sent or logged."""


@dataclass(frozen=True)
class ConverseRequest:
    """A Converse-style request: messages (user first, roles alternating) and a system prompt."""

    messages: tuple[Mapping[str, Any], ...]
    system: str | None = None
    tool_config: Mapping[str, Any] | None = None  # Converse `toolConfig`, passed through

    @classmethod
    def from_prompt(
        cls, prompt: str, system: str | None = None, tool_config: Mapping[str, Any] | None = None
    ) -> ConverseRequest:
        return cls.build([{"role": "user", "content": [{"text": prompt}]}], system, tool_config)

    @classmethod
    def build(
        cls,
        messages: Sequence[Mapping[str, Any]],
        system: str | None = None,
        tool_config: Mapping[str, Any] | None = None,
    ) -> ConverseRequest:
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise RequestError("messages must be a list of {role, content} objects")
        if not messages:
            raise RequestError("messages must not be empty")
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise RequestError("system must be a non-empty string or None")
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise RequestError(f"messages[{i}] must be an object, got {type(m).__name__}")
            if m.get("role") not in _ROLES:
                raise RequestError(f"messages[{i}].role must be 'user' or 'assistant'")
            content = m.get("content")
            if not isinstance(content, list) or not content:
                raise RequestError(f"messages[{i}].content must be a non-empty list of blocks")
            for j, b in enumerate(content):
                if not isinstance(b, Mapping) or len(b) != 1:
                    raise RequestError(f"messages[{i}].content[{j}] must be one content block")
                if "text" in b and not isinstance(b["text"], str):
                    raise RequestError(f"messages[{i}].content[{j}].text must be a string")
                tool = b.get("toolUse", b.get("toolResult"))
                if tool is not None and (
                    not isinstance(tool, Mapping) or not isinstance(tool.get("toolUseId"), str)
                ):
                    raise RequestError(
                        f"messages[{i}].content[{j}]: a toolUse/toolResult block needs a "
                        "string toolUseId"
                    )
        _check_tool_config(messages, tool_config)
        if messages[0]["role"] != "user" or messages[-1]["role"] != "user":
            raise RequestError("a conversation must start and end with a user message")
        for i in range(1, len(messages)):
            if messages[i]["role"] == messages[i - 1]["role"]:
                raise RequestError(f"messages[{i}] repeats role {messages[i]['role']!r}")
        return cls(tuple(messages), system, tool_config)

    def routing_text(self) -> str:
        """The text the router scores: the prompt alone, or the whole conversation."""
        if len(self.messages) == 1 and self.system is None:
            return message_text(self.messages[0])
        parts = [self.system] if self.system else []
        parts.extend(message_text(m) for m in self.messages)
        return "\n\n".join(p for p in parts if p)

    def last_user_text(self) -> str:
        return message_text(self.messages[-1])

    def to_bedrock(self, cache_points: bool = False) -> dict[str, Any]:
        """`messages` and `system` for Converse; with `cache_points`, mark the prefix to cache."""
        messages = [{"role": m["role"], "content": list(m["content"])} for m in self.messages]
        out: dict[str, Any] = {"messages": messages}
        if self.system:
            out["system"] = [{"text": self.system}]
        if self.tool_config is not None:
            out["toolConfig"] = dict(self.tool_config)
        if cache_points:
            if self.system:
                out["system"].append({"cachePoint": {"type": "default"}})
            messages[-1]["content"].append({"cachePoint": {"type": "default"}})
        return out


def _check_tool_config(
    messages: Sequence[Mapping[str, Any]], tool_config: Mapping[str, Any] | None
) -> None:
    """Bedrock refuses tool blocks without a toolConfig; say so before any call."""
    if tool_config is not None:
        tools = tool_config.get("tools") if isinstance(tool_config, Mapping) else None
        if not isinstance(tools, list) or not tools:
            raise RequestError("tool_config must be a Converse toolConfig with a non-empty tools")
        for k, t in enumerate(tools):
            spec = t.get("toolSpec") if isinstance(t, Mapping) else None
            if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
                raise RequestError(f"tool_config.tools[{k}] must be a {{toolSpec: {{name, ...}}}}")
        return
    for i, m in enumerate(messages):
        if any("toolUse" in b or "toolResult" in b for b in m["content"]):
            raise RequestError(f"messages[{i}] has tool blocks but no tool_config was given")


def has_tool_use(message: Mapping[str, Any]) -> bool:
    """Whether an assistant message asks for a tool call."""
    return any(isinstance(b, Mapping) and "toolUse" in b for b in message.get("content", []))


def message_text(message: Mapping[str, Any]) -> str:
    return "\n".join(
        b["text"] for b in message.get("content", []) if isinstance(b, Mapping) and "text" in b
    )


class StickyTiers:
    """conversation id -> tier name, bounded (LRU) and expiring, safe across threads."""

    def __init__(self, max_conversations: int = 100_000, ttl_s: float = 3600.0) -> None:
        if max_conversations < 1 or ttl_s <= 0:
            raise ValueError("StickyTiers needs max_conversations >= 1 and ttl_s > 0")
        self._max = max_conversations
        self._ttl = ttl_s
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conversation_id: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            item = self._items.get(conversation_id)
            if item is None:
                return None
            if now - item[1] > self._ttl:
                del self._items[conversation_id]
                return None
            self._items.move_to_end(conversation_id)
            return item[0]

    def set(self, conversation_id: str, tier: str) -> None:
        with self._lock:
            self._items[conversation_id] = (tier, time.monotonic())
            self._items.move_to_end(conversation_id)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
