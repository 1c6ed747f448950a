"""One prompt on one tier as a request: a Converse call (on-demand) or an Anthropic
messages body (a Bedrock batch record for Claude models), from the same settings."""

from __future__ import annotations

from typing import Any

from labeling.prompts import PromptItem
from router.inference import inference_config
from router.ladder import Tier
from router.tokens import estimate_tokens
from serving.batch_jobs import ANTHROPIC_VERSION, messages_body

__all__ = ["ANTHROPIC_VERSION", "anthropic_body", "converse_request", "worst_case_cost"]


def converse_request(item: PromptItem, tier: Tier) -> dict[str, Any]:
    return {
        "modelId": tier.model_id,
        "messages": list(item.messages),
        "inferenceConfig": inference_config(tier),
    }


def anthropic_body(item: PromptItem, tier: Tier) -> dict[str, Any]:
    return messages_body(item.messages, tier)


def worst_case_cost(prompt_chars: int, tier: Tier) -> float:
    """On-demand dollars if the answer used all of max_tokens (the spend-cap estimate)."""
    return tier.cost_usd(estimate_tokens(prompt_chars), tier.max_tokens)
