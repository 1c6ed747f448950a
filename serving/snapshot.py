"""The serving bundle as one request sees it: one router snapshot and its cascade.

Why: a request must never mix versions. A `router.Router` is already immutable once
loaded (ladder, routing model, verifier and cascade policy verified together); a
`SwappableRouter` hands out the current one through `snapshot()`. The client takes the
snapshot once per request, decides with it and walks the cascade built from that same
object, so the decision, the verifier and the thresholds all come from one bundle.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from router.cascade import CascadeFile, CascadePolicy
from router.verifier import Verifier
from serving.routing import RouterLike


@dataclass(frozen=True)
class Cascade:
    """A bundle's cascade as the client runs it: cost model, verifier, operating point."""

    file: CascadeFile
    verifier: Verifier
    policy: CascadePolicy


def find_cascade(router: object, point: str) -> Cascade | None:
    """The router bundle's cascade at operating point `point` (None when the bundle has
    no verifier and cascade policy); ValueError for a point the bundle does not have."""
    cascade = getattr(router, "cascade", None)
    verifier = getattr(router, "verifier", None)
    if not isinstance(cascade, CascadeFile) or not isinstance(verifier, Verifier):
        return None
    found = [p for p in (cascade.policy, *cascade.points) if p.label == point]
    found += [p for p in cascade.points if p.expected.get("alias") == point]  # old names
    if not found:
        labels = [p.label for p in (cascade.policy, *cascade.points)]
        raise ValueError(f"cascade_point {point!r} is not in the bundle; it has {labels}")
    return Cascade(cascade, verifier, found[0])


def take_snapshot(router: RouterLike) -> RouterLike:
    """The router object one request uses throughout (itself for a plain router)."""
    snap = getattr(router, "snapshot", None)
    return snap() if callable(snap) else router


@dataclass(frozen=True)
class BundleSnapshot:
    """What one request routes and judges with: a router snapshot and its cascade."""

    router: RouterLike
    cascade: Cascade | None

    @property
    def version(self) -> str:
        return self.router.version


class SnapshotCache:
    """The `BundleSnapshot` of the router's current snapshot, built once per swap.

    Reading is one attribute load (no lock): a swap is seen by the next request, which
    builds the new snapshot's cascade under a lock and publishes it by assignment."""

    def __init__(self, router: RouterLike, cascade_point: str | None) -> None:
        self._router = router
        self._point = cascade_point  # None: the cascade is off
        self._lock = threading.Lock()
        self._last = self._build(take_snapshot(router))

    def _build(self, snap: RouterLike) -> BundleSnapshot:
        cascade = find_cascade(snap, self._point) if self._point is not None else None
        return BundleSnapshot(snap, cascade)

    def current(self) -> BundleSnapshot:
        snap = take_snapshot(self._router)
        last = self._last
        if last.router is snap:
            return last
        with self._lock:
            if self._last.router is not snap:
                self._last = self._build(snap)
            return self._last
