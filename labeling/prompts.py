"""The prompts file: JSONL of `id`, `prompt` or Converse `messages`, optional `reference`,
`task` and `split`. Streamed, and validated line by line so a bad line 9,000 stops the
run with `file:line: field` before any money is spent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcomes import iter_json_lines


class PromptsError(ValueError):
    """A prompts file is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class PromptItem:
    """One prompt to label. `messages` is Converse-shaped (text blocks only)."""

    id: str
    messages: tuple[dict[str, Any], ...]
    reference: Any = None
    task: str | None = None
    split: str | None = None
    where: str = ""

    @property
    def text(self) -> str:
        """The last user turn's text: the outcomes file's `prompt` and the router's input."""
        for m in reversed(self.messages):
            if m["role"] == "user":
                return "\n".join(b["text"] for b in m["content"])
        return ""

    @property
    def multi_turn(self) -> bool:
        return len(self.messages) > 1


def _messages(v: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(v, list) or not v:
        raise PromptsError(f"{where}: field 'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(v):
        w = f"{where}: messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise PromptsError(f"{w}.role: must be 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, str):
            content = [{"text": content}]
        if not isinstance(content, list) or not content:
            raise PromptsError(f"{w}.content: must be a non-empty list of text blocks")
        blocks = []
        for j, b in enumerate(content):
            if not isinstance(b, dict) or not isinstance(b.get("text"), str):
                raise PromptsError(f"{w}.content[{j}]: only {{'text': ...}} blocks are supported")
            blocks.append({"text": b["text"]})
        out.append({"role": m["role"], "content": blocks})
    if out[0]["role"] != "user" or out[-1]["role"] != "user":
        raise PromptsError(f"{where}: field 'messages' must start and end with a user turn")
    return tuple(out)


def parse_prompt(obj: Any, where: str) -> PromptItem:
    if not isinstance(obj, dict):
        raise PromptsError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    pid = obj.get("id")
    if isinstance(pid, int) and not isinstance(pid, bool):
        pid = str(pid)
    if not isinstance(pid, str) or not pid.strip():
        raise PromptsError(f"{where}: field 'id' must be a non-empty string")
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        raise PromptsError(f"{where}: give exactly one of 'prompt' or 'messages'")
    if has_prompt:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise PromptsError(f"{where}: field 'prompt' must be a non-empty string")
        messages: tuple[dict[str, Any], ...] = (
            {"role": "user", "content": [{"text": obj["prompt"]}]},
        )
    else:
        messages = _messages(obj["messages"], where)
    for k in ("task", "split"):
        if obj.get(k) is not None and not isinstance(obj[k], str):
            raise PromptsError(f"{where}: field {k!r} must be a string")
    return PromptItem(
        id=pid,
        messages=messages,
        reference=obj.get("reference"),
        task=obj.get("task") or None,
        split=obj.get("split"),
        where=where,
    )


def iter_prompts(path: str | Path) -> Iterator[PromptItem]:
    """Stream prompts. Duplicate ids are the caller's check (it holds the id set or table)."""
    for where, obj in iter_json_lines(path, PromptsError, "prompts file"):
        yield parse_prompt(obj, where)
