"""One prompt on one tier as a request: a Converse call (on-demand) or an Anthropic
messages body (a Bedrock batch record for Claude models), from the same settings."""

from __future__ import annotations

from typing import Any

from labeling.prompts import PromptItem
from router.inference import inference_config
from router.ladder import Tier
from router.tokens import estimate_tokens

ANTHROPIC_VERSION = "bedrock-2023-05-31"


def converse_request(item: PromptItem, tier: Tier) -> dict[str, Any]:
    return {
        "modelId": tier.model_id,
        "messages": list(item.messages),
        "inferenceConfig": inference_config(tier),
    }


def anthropic_body(item: PromptItem, tier: Tier) -> dict[str, Any]:
    body: dict[str, Any] = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": tier.max_tokens,
        "messages": [
            {
                "role": m["role"],
                "content": [{"type": "text", "text": b["text"]} for b in m["content"]],
            }
            for m in item.messages
        ],
    }
    if tier.temperature is not None:
        body["temperature"] = tier.temperature
    if tier.top_p is not None:
        body["top_p"] = tier.top_p
    return body


def worst_case_cost(prompt_chars: int, tier: Tier) -> float:
    """On-demand dollars if the answer used all of max_tokens (the spend-cap estimate)."""
    return tier.cost_usd(estimate_tokens(prompt_chars), tier.max_tokens)
