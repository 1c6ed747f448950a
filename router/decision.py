"""What a routing decision carries back to the caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, overload

DEFAULT_REASON = "policy"


class _LazyReason:
    """A routed decision's `reason`, built on first read: route() only stores what the
    text needs (a formatter and its arguments), so a caller that never reads it pays
    nothing. Decisions built with a reason keep it in their __dict__, which shadows this
    (a non-data descriptor), so they behave as plain dataclass values."""

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> str: ...
    @overload
    def __get__(self, obj: Decision, owner: type | None = None) -> str: ...
    def __get__(self, obj: Decision | None, owner: type | None = None) -> str:
        if obj is None:
            return DEFAULT_REASON  # the dataclass default
        why = obj.__dict__.get("_why")
        text = DEFAULT_REASON if why is None else why[0](*why[1:])
        obj.__dict__["reason"] = text
        return text


@dataclass(frozen=True)
class Decision:
    """The tier to call and why: P(pass) per tier, cheapest first, and the router version.

    `reason` of a routed decision says which threshold each cheaper tier missed (and
    that the prompt was empty, when it was), e.g. "policy: haiku p=0.41 < 0.55; sonnet
    p=0.62 >= 0.60"."""

    tier: str
    tier_index: int
    model_id: str
    max_tokens: int
    p_pass: dict[str, float]
    router_version: str
    reason: str = _LazyReason()  # type: ignore[assignment]

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Decision:
        """A Decision from all of its field values, without the generated __init__: that
        sets each field through object.__setattr__, a quarter of a fast route() call."""
        if fields.keys() != _FIELD_NAMES:
            raise TypeError(f"Decision fields must be exactly {sorted(_FIELD_NAMES)}")
        d = object.__new__(cls)
        d.__dict__.update(fields)
        return d

    @classmethod
    def routed(cls, fields: dict[str, Any], explain: Callable[..., str], *args: Any) -> Decision:
        """route()'s constructor: every field but `reason`, which explain(*args) builds
        when first read. No checks: the router passes the fields it always passes."""
        d = object.__new__(cls)
        d.__dict__.update(fields)
        d.__dict__["_why"] = (explain, *args)
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
