"""What the tiered client needs from a router, and a fixed-tier router for fail-safe use.

The client depends on this small protocol rather than on `router.Router` so a service
can run with a fixed tier (no bundle) and so a router that throws never takes the
serving path down with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from router.decision import Decision
from router.ladder import Ladder

log = logging.getLogger(__name__)


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

    def __init__(
        self,
        ladder: Ladder,
        tier: str | int = -1,
        version: str | None = None,
        reason: str = "fixed",
    ) -> None:
        if isinstance(tier, str):
            index = ladder.index(tier)
        else:
            if not -len(ladder) <= tier < len(ladder):
                raise ValueError(f"tier index {tier} out of range for {len(ladder)} tiers")
            index = tier % len(ladder)
        self._ladder = ladder
        self._index = index
        self._version = version or f"fixed:{ladder.tiers[index].name}"
        self._reason = reason

    @property
    def ladder(self) -> Ladder:
        return self._ladder

    @property
    def version(self) -> str:
        return self._version

    @property
    def tier(self) -> str:
        return self._ladder.tiers[self._index].name

    def route(self, text: str) -> Decision:
        t = self._ladder.tiers[self._index]
        return Decision(
            tier=t.name,
            tier_index=self._index,
            model_id=t.model_id,
            max_tokens=t.max_tokens,
            p_pass={},
            router_version=self._version,
            reason=self._reason,
        )


FAILSAFE_VERSION = "failsafe"


def load_router_or_failsafe(
    bundle: str | Path,
    ladder: Ladder,
    default_tier: str | int = -1,
    *,
    loader: Callable[[Path], Any] | None = None,
) -> RouterLike:
    """The bundle's router, or a fixed router on `default_tier` if it cannot be used.

    Why: a missing, corrupt or incompatible bundle must degrade routing (every
    request goes to the default tier, each decision saying why), never fail the
    service's requests or its start-up. The serving ladder is the caller's own, so
    a bundle routing over different tiers is refused the same way.
    """
    try:
        if loader is None:
            from router.router import Router

            router: RouterLike = Router.load(bundle)
        else:
            router = loader(Path(bundle))
        got = [(t.name, t.model_id) for t in router.ladder.tiers]
        want = [(t.name, t.model_id) for t in ladder.tiers]
        if got != want:
            raise ValueError(f"bundle ladder {router.ladder.names} differs from {ladder.names}")
        return router
    except Exception as e:  # anything: the point is that serving keeps going
        why = f"{type(e).__name__}: {e}"[:500]
        fallback = FixedTierRouter(
            ladder, default_tier, FAILSAFE_VERSION, reason=f"bundle_unavailable: {why}"
        )
        log.error(
            "router bundle %s cannot be used (%s); routing every request to %s",
            bundle,
            why,
            fallback.tier,
        )
        return fallback
