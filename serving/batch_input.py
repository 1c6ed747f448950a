"""The input of a routed batch run: a JSONL file of records, validated before anything is
submitted, each error naming its line.

A line is `{"id": str, "prompt": str}` or `{"id": str, "messages": [...]}` (Converse
messages with text blocks), with an optional `"system"` string and optional per-record
settings `"max_tokens"` (capped at the tier's) and `"tags"` (string -> string, logged).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.conversation import ConverseRequest, RequestError

_FIELDS = {"id", "prompt", "messages", "system", "max_tokens", "tags"}
MAX_ID_CHARS = 512


class BatchInputError(ValueError):
    """The input file is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class BatchItem:
    """One record of the input: its id, the request, and its own settings."""

    id: str
    request: ConverseRequest
    max_tokens: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """What the router and the verifier read (the on-demand client's routing text)."""
        return self.request.routing_text()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "messages": [dict(m) for m in self.request.messages]}
        if self.request.system:
            d["system"] = self.request.system
        if self.max_tokens is not None:
            d["max_tokens"] = self.max_tokens
        if self.tags:
            d["tags"] = dict(self.tags)
        return d


def parse_item(d: Any, where: str) -> BatchItem:
    """One input object as a BatchItem; BatchInputError saying what is wrong where."""
    if not isinstance(d, dict):
        raise BatchInputError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - _FIELDS)
    if unknown:
        raise BatchInputError(f"{where}: unknown field(s) {unknown}; known: {sorted(_FIELDS)}")
    rid = d.get("id")
    if not isinstance(rid, str) or not rid.strip() or len(rid) > MAX_ID_CHARS:
        raise BatchInputError(
            f"{where}: field 'id': expected a non-empty string of at most {MAX_ID_CHARS} "
            f"characters, got {rid!r}"
        )
    has_prompt, has_messages = "prompt" in d, "messages" in d
    if has_prompt == has_messages:
        raise BatchInputError(f"{where}: give exactly one of 'prompt' and 'messages'")
    system = d.get("system")
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise BatchInputError(f"{where}: field 'system': expected a non-empty string")
    if has_prompt:
        prompt = d["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise BatchInputError(f"{where}: field 'prompt': expected a non-empty string")
        # What ConverseRequest.from_prompt builds, without re-checking the one message.
        req = ConverseRequest(({"role": "user", "content": [{"text": prompt}]},), system)
    else:
        try:
            req = ConverseRequest.build(d["messages"], system)
        except RequestError as e:
            raise BatchInputError(f"{where}: {e}") from None
        for i, m in enumerate(req.messages):
            for j, b in enumerate(m["content"]):
                if "text" not in b:
                    raise BatchInputError(
                        f"{where}: messages[{i}].content[{j}]: batch records take text "
                        "blocks only"
                    )
    max_tokens = d.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise BatchInputError(
            f"{where}: field 'max_tokens': expected a positive integer, got {max_tokens!r}"
        )
    tags = d.get("tags") or {}
    if not isinstance(tags, dict) or (
        tags and not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    ):
        raise BatchInputError(f"{where}: field 'tags': expected an object of strings")
    return BatchItem(rid, req, max_tokens, tags)


def iter_items(path: str | Path) -> Iterator[BatchItem]:
    """Every record of the file in order; raises BatchInputError at the first bad line
    (invalid JSON, a bad field, a duplicate id)."""
    p = Path(path)
    seen: set[str] = set()
    try:
        f = p.open("rb")
    except OSError as e:
        raise BatchInputError(f"{p}: cannot read: {e.strerror or e}") from None
    with f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{p}:{n}"
            try:
                d = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise BatchInputError(f"{where}: invalid JSON: {e}") from None
            item = parse_item(d, where)
            if item.id in seen:
                raise BatchInputError(f"{where}: field 'id': duplicate id {item.id!r}")
            seen.add(item.id)
            yield item


def read_items(path: str | Path) -> list[BatchItem]:
    """The whole file, validated; an empty file is an error."""
    items = list(iter_items(path))
    if not items:
        raise BatchInputError(f"{path}: no records")
    return items
