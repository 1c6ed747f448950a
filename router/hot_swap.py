"""A router that can be replaced by a new bundle while requests keep flowing.

Why: a service must pick up a retrained router without a restart, a failed request,
or a decision that mixes two versions. `SwappableRouter` holds one immutable
`Router` reference; `swap()` loads and verifies the new bundle completely (checksums,
ladder, a probe decision) *before* publishing it with a single reference assignment,
which is atomic in CPython. Every call reads that reference once and computes the
whole decision on that router, so each `Decision.router_version` names the router
that produced every number in it. A bundle that fails to load never replaces the
current one.

A loaded `Router` is the bundle snapshot: its ladder, routing model, answer verifier and
cascade policy were loaded and verified together and never change. A request that needs
more than a decision (the tiered client's cascade) takes `snapshot()` once and uses
only that object, so a swap can never give it one version's decision and another's
verifier.
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
from router.prompt_features import PromptFeatures
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
    `allow_cascade_removal=False` (the default) likewise refuses a bundle without a
    verifier and cascade policy when the serving one has them: a swap must not turn the
    cascade off silently. `add_check(fn)` adds a test every new bundle must pass before it
    is published (the tiered client checks its cascade operating point is there).
    """

    def __init__(
        self,
        router: Router,
        *,
        allow_ladder_change: bool = False,
        allow_cascade_removal: bool = False,
        loader: Callable[[Path], Router] | None = None,
    ) -> None:
        self._current = router
        self._allow_ladder_change = allow_ladder_change
        self._allow_cascade_removal = allow_cascade_removal
        self._loader = loader or (lambda p: Router.load(p))
        self._swap_lock = threading.Lock()  # one swap at a time; readers never take it
        self._checks: tuple[Callable[[Router], object], ...] = ()
        self.swaps = 0

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        allow_ladder_change: bool = False,
        allow_cascade_removal: bool = False,
    ) -> SwappableRouter:
        return cls(
            Router.load(path),
            allow_ladder_change=allow_ladder_change,
            allow_cascade_removal=allow_cascade_removal,
        )

    def add_check(self, check: Callable[[Router], object]) -> None:
        """`check(new_router)` runs before every swap is published; any exception it
        raises refuses the swap (BundleError naming the bundle and the reason)."""
        with self._swap_lock:
            self._checks = (*self._checks, check)

    # -- the RouterLike surface ------------------------------------------------------
    @property
    def current(self) -> Router:
        return self._current

    def snapshot(self) -> Router:
        """The serving bundle as one immutable object: read once per request."""
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

    def route_with_features(self, text: str) -> tuple[Decision, PromptFeatures | None]:
        return self._current.route_with_features(text)  # one read: one version

    @property
    def features_note(self) -> str | None:
        return self._current.features_note

    # -- swapping --------------------------------------------------------------------
    def swap(self, path: str | Path) -> SwapResult:
        """Load, verify and probe `path`, then publish it. Raises BundleError and keeps
        the current router if anything about the new bundle is wrong."""
        try:
            new = self._loader(Path(path))
        except BundleError:
            raise
        except Exception as e:  # onnxruntime, zip and OS errors: same refusal
            raise BundleError(f"{path}: cannot load bundle: {type(e).__name__}: {e}") from e
        return self.publish(new, str(path))

    def publish(self, new: Router, source: str) -> SwapResult:
        """Verify an already loaded router (ladder, cascade, added checks, a probe
        decision) and make it current; raises BundleError and keeps the current one if
        anything is wrong. `swap` is load + publish; a caller that loaded ahead (the demo,
        a service warming a bundle) publishes when it chooses."""
        path = source
        with self._swap_lock:
            old = self._current
            if not self._allow_ladder_change and _ladder_key(new.ladder) != _ladder_key(old.ladder):
                raise BundleError(
                    f"{path}: ladder {new.ladder.names} differs from the serving ladder "
                    f"{old.ladder.names}; pass allow_ladder_change=True to accept it"
                )
            if (
                not self._allow_cascade_removal
                and has_cascade(old)
                and not has_cascade(new)
            ):
                raise BundleError(
                    f"{path}: bundle has no verifier and cascade policy but the serving "
                    f"bundle {old.version} runs a cascade; pass allow_cascade_removal=True "
                    "to serve it without one"
                )
            for check in self._checks:
                try:
                    check(new)
                except Exception as e:
                    raise BundleError(f"{path}: refused: {type(e).__name__}: {e}") from e
            try:
                new.route(PROBE_TEXT)
                new.route_batch([PROBE_TEXT, ""])
            except Exception as e:
                raise BundleError(f"{path}: probe decision failed: {type(e).__name__}: {e}") from e
            self._current = new
            self.swaps += 1
            log.info("router swapped %s -> %s (%s)", old.version, new.version, path)
            return SwapResult(old.version, new.version, source)


def has_cascade(router: object) -> bool:
    """Whether a router snapshot carries an answer verifier and a cascade policy."""
    return (
        getattr(router, "cascade", None) is not None
        and getattr(router, "verifier", None) is not None
    )


def _ladder_key(ladder: Ladder) -> tuple[tuple[str, str], ...]:
    return tuple((t.name, t.model_id) for t in ladder.tiers)
