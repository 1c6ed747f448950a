"""What a routing decision carries back to the caller."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Decision:
    """The tier to call and why: P(pass) per tier, cheapest first, and the router version."""

    tier: str
    tier_index: int
    model_id: str
    max_tokens: int
    p_pass: dict[str, float]
    router_version: str
    reason: str = "policy"
    inference: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Decision:
        """A Decision from all of its field values, without the generated __init__: that
        sets each field through object.__setattr__, a quarter of a fast route() call."""
        if fields.keys() != _FIELD_NAMES:
            raise TypeError(f"Decision fields must be exactly {sorted(_FIELD_NAMES)}")
        d = object.__new__(cls)
        d.__dict__.update(fields)
        return d

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "tier_index": self.tier_index,
            "model_id": self.model_id,
            "max_tokens": self.max_tokens,
            "p_pass": dict(self.p_pass),
            "router_version": self.router_version,
            "reason": self.reason,
        }


_FIELD_NAMES = {f.name for f in fields(Decision)}
