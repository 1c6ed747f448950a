"""What the tiered client needs from a router, and a fixed-tier router for fail-safe use.

The client depends on this small protocol rather than on `router.Router` so a service
can run with a fixed tier (no bundle) and so a router that throws never takes the
serving path down with it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from router.decision import Decision
from router.ladder import Ladder


@runtime_checkable
class RouterLike(Protocol):
    """Anything that turns request text into a `Decision` over a ladder."""

    @property
    def ladder(self) -> Ladder: ...

    @property
    def version(self) -> str: ...

    def route(self, text: str) -> Decision: ...


class FixedTierRouter:
    """Always route to one tier: the fail-safe default, and a baseline ("always Sonnet")."""

    def __init__(self, ladder: Ladder, tier: str | int = -1, version: str | None = None) -> None:
        if isinstance(tier, str):
            index = ladder.index(tier)
        else:
            if not -len(ladder) <= tier < len(ladder):
                raise ValueError(f"tier index {tier} out of range for {len(ladder)} tiers")
            index = tier % len(ladder)
        self._ladder = ladder
        self._index = index
        self._version = version or f"fixed:{ladder.tiers[index].name}"

    @property
    def ladder(self) -> Ladder:
        return self._ladder

    @property
    def version(self) -> str:
        return self._version

    def route(self, text: str) -> Decision:
        t = self._ladder.tiers[self._index]
        return Decision(
            tier=t.name,
            tier_index=self._index,
            model_id=t.model_id,
            max_tokens=t.max_tokens,
            p_pass={},
            router_version=self._version,
            reason="fixed",
        )
