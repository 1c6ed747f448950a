"""Dollar cost of one Bedrock call, including prompt-cache reads and writes.

Bedrock reports cached prompt tokens apart from `inputTokens`; Anthropic models
bill a cache write at 1.25x and a cache read at 0.1x the input price, so a
conversation kept on one tier is cheaper than the same tokens billed fresh.

Extended thinking (a tier's `additional_request_fields.thinking`): Bedrock bills the
reasoning tokens as output tokens and counts them in `usage.outputTokens`, so `cost_usd`
prices them at the tier's output price with no extra term; `thinking_cost_bound` is the
most a thinking budget can add to one call, for budgeting before the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.ladder import Tier


@dataclass(frozen=True)
class Usage:
    """Token counts as Bedrock's `usage` reports them (cache tokens not in input_tokens)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0

    @classmethod
    def from_bedrock(cls, usage: Any) -> Usage:
        u = usage if isinstance(usage, dict) else {}

        def _int(key: str) -> int:
            v = u.get(key, 0)
            return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0

        return cls(
            input_tokens=_int("inputTokens"),
            output_tokens=_int("outputTokens"),
            cache_read_input_tokens=_int("cacheReadInputTokens"),
            cache_write_input_tokens=_int("cacheWriteInputTokens"),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_write_input_tokens + other.cache_write_input_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_write_input_tokens
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_write_input_tokens": self.cache_write_input_tokens,
        }


@dataclass(frozen=True)
class CachePricing:
    """Cache token prices as multiples of the tier's input price."""

    write_multiplier: float = 1.25
    read_multiplier: float = 0.10

    def __post_init__(self) -> None:
        for name in ("write_multiplier", "read_multiplier"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise ValueError(f"CachePricing.{name} must be a number >= 0, got {v!r}")


def cost_usd(tier: Tier, usage: Usage, cache: CachePricing | None = None) -> float:
    """Dollars for `usage` on `tier`: fresh input, output, cache writes and cache reads."""
    c = cache or CachePricing()
    cached = (
        usage.cache_write_input_tokens * c.write_multiplier
        + usage.cache_read_input_tokens * c.read_multiplier
    )
    return tier.cost_usd(usage.input_tokens + cached, usage.output_tokens)


def thinking_cost_bound(tier: Tier) -> float:
    """Dollars the tier's thinking budget adds to a call at most (0 without thinking)."""
    return tier.thinking_budget * tier.price_out_per_mtok / 1e6
