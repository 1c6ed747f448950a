"""Batch record bodies <-> Converse: Claude's batch format is Anthropic's messages API,
Amazon Nova's its own `messages-v1` schema (close to Converse)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fake_bedrock.errors import BedrockError


def anthropic_to_converse(model_input: Any) -> dict[str, Any]:
    """An Anthropic messages body (the batch record format for Claude) as a Converse body."""
    if not isinstance(model_input, dict):
        raise BedrockError(400, "ValidationException", "modelInput must be a JSON object")
    if not isinstance(model_input.get("anthropic_version"), str):
        raise BedrockError(400, "ValidationException", "anthropic_version is required")
    max_tokens = model_input.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BedrockError(400, "ValidationException", "max_tokens: a positive integer is required")

    def blocks(content: Any) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"text": content}]
        if not isinstance(content, list):
            raise BedrockError(400, "ValidationException", "content must be a string or list")
        out = []
        for b in content:
            if (
                not isinstance(b, dict)
                or b.get("type") != "text"
                or not isinstance(b.get("text"), str)
            ):
                raise BedrockError(
                    400, "ValidationException", "only text content blocks are supported"
                )
            out.append({"text": b["text"]})
        return out

    messages = model_input.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BedrockError(400, "ValidationException", "messages: at least one message is required")
    conv: dict[str, Any] = {
        "messages": [
            {
                "role": m.get("role") if isinstance(m, dict) else None,
                "content": blocks(m.get("content") if isinstance(m, dict) else None),
            }
            for m in messages
        ],
        "inferenceConfig": {"maxTokens": max_tokens},
    }
    if model_input.get("system") is not None:
        conv["system"] = blocks(model_input["system"])
    return conv


def converse_to_anthropic(resp: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    """A Converse response as the Anthropic messages response body batch output carries."""
    usage = resp.get("usage", {})
    text = "".join(b.get("text", "") for b in resp["output"]["message"]["content"])
    return {
        "id": "msg_bdrk_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model_id.split(".")[-1].rsplit("-v", 1)[0],
        "content": [{"type": "text", "text": text}],
        "stop_reason": resp.get("stopReason", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("inputTokens", 0)),
            "output_tokens": int(usage.get("outputTokens", 0)),
        },
    }


def is_nova_body(model_input: Any) -> bool:
    return isinstance(model_input, dict) and model_input.get("schemaVersion") == "messages-v1"


def nova_to_converse(model_input: Any) -> dict[str, Any]:
    """A Nova `messages-v1` invoke body as a Converse body (text blocks only)."""
    messages = model_input.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BedrockError(400, "ValidationException", "messages: at least one message is required")
    cfg = model_input.get("inferenceConfig") or {}
    max_tokens = cfg.get("maxTokens") if isinstance(cfg, dict) else None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BedrockError(400, "ValidationException", "inferenceConfig.maxTokens is required")
    conv: dict[str, Any] = {
        "messages": [
            {"role": m.get("role"), "content": list(m.get("content") or [])}
            for m in messages
            if isinstance(m, dict)
        ],
        "inferenceConfig": {"maxTokens": max_tokens},
    }
    if model_input.get("system"):
        conv["system"] = list(model_input["system"])
    return conv


def converse_to_nova(resp: Mapping[str, Any]) -> dict[str, Any]:
    """A Converse response as Nova's invoke response body (what its batch output holds)."""
    usage = resp.get("usage", {})
    return {
        "output": {"message": dict(resp["output"]["message"])},
        "stopReason": resp.get("stopReason", "end_turn"),
        "usage": {
            "inputTokens": int(usage.get("inputTokens", 0)),
            "outputTokens": int(usage.get("outputTokens", 0)),
            "totalTokens": int(usage.get("inputTokens", 0)) + int(usage.get("outputTokens", 0)),
        },
    }
