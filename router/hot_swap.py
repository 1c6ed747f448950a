"""A router that can be replaced by a new bundle while requests keep flowing.

Why: a service must pick up a retrained router without a restart, a failed request,
or a decision that mixes two versions. `SwappableRouter` holds one immutable
`Router` reference; `swap()` loads and verifies the new bundle completely (checksums,
ladder, a probe decision) *before* publishing it with a single reference assignment,
which is atomic in CPython. Every call reads that reference once and computes the
whole decision on that router, so each `Decision.router_version` names the router
that produced every number in it. A bundle that fails to load never replaces the
current one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from router.bundle import BundleError
from router.decision import Decision
from router.ladder import Ladder
from router.router import Router

log = logging.getLogger(__name__)

PROBE_TEXT = "Summarize the main argument of this paragraph in one sentence."


@dataclass(frozen=True)
class SwapResult:
    """What a swap did: the versions before and after, and the bundle it came from."""

    old_version: str
    new_version: str
    source: str


class SwappableRouter:
    """Delegates to the current `Router`; `swap(path)` replaces it atomically.

    `allow_ladder_change=False` (the default) refuses a bundle whose ladder differs in
    tier names or model ids: callers such as the tiered client cache the ladder, and a
    decision's `tier_index` must mean the same tier before and after a swap.
    """

    def __init__(
        self,
        router: Router,
        *,
        allow_ladder_change: bool = False,
        loader: Callable[[Path], Router] | None = None,
    ) -> None:
        self._current = router
        self._allow_ladder_change = allow_ladder_change
        self._loader = loader or (lambda p: Router.load(p))
        self._swap_lock = threading.Lock()  # one swap at a time; readers never take it
        self.swaps = 0

    @classmethod
    def load(cls, path: str | Path, *, allow_ladder_change: bool = False) -> SwappableRouter:
        return cls(Router.load(path), allow_ladder_change=allow_ladder_change)

    # -- the RouterLike surface ------------------------------------------------------
    @property
    def current(self) -> Router:
        return self._current

    @property
    def ladder(self) -> Ladder:
        return self._current.ladder

    @property
    def version(self) -> str:
        return self._current.version

    def route(self, text: str) -> Decision:
        return self._current.route(text)  # one read of the reference: one version

    def route_batch(self, texts: list[str]) -> list[Decision]:
        return self._current.route_batch(texts)

    # -- swapping --------------------------------------------------------------------
    def swap(self, path: str | Path) -> SwapResult:
        """Load, verify and probe `path`, then publish it. Raises BundleError and keeps
        the current router if anything about the new bundle is wrong."""
        with self._swap_lock:
            old = self._current
            try:
                new = self._loader(Path(path))
            except BundleError:
                raise
            except Exception as e:  # onnxruntime, zip and OS errors: same refusal
                raise BundleError(f"{path}: cannot load bundle: {type(e).__name__}: {e}") from e
            if not self._allow_ladder_change and _ladder_key(new.ladder) != _ladder_key(old.ladder):
                raise BundleError(
                    f"{path}: ladder {new.ladder.names} differs from the serving ladder "
                    f"{old.ladder.names}; pass allow_ladder_change=True to accept it"
                )
            try:
                new.route(PROBE_TEXT)
                new.route_batch([PROBE_TEXT, ""])
            except Exception as e:
                raise BundleError(f"{path}: probe decision failed: {type(e).__name__}: {e}") from e
            self._current = new
            self.swaps += 1
            log.info("router swapped %s -> %s (%s)", old.version, new.version, path)
            return SwapResult(old.version, new.version, str(path))


def _ladder_key(ladder: Ladder) -> tuple[tuple[str, str], ...]:
    return tuple((t.name, t.model_id) for t in ladder.tiers)
