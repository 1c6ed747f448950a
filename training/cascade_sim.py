"""The cascade on matrices: the out-of-fold rows the policy is searched on, and its walk.

`simulate` is router.cascade.walk's rules over every training prompt at once (a test keeps
the two equal); the rows are saved beside the bundle so `tier-router policy` can refit the
policy to another goal without retraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.cascade import CascadePolicy
from router.verifier import WITH_PREV, WITH_SECOND


@dataclass(frozen=True)
class CascadeData:
    """Everything the policy search needs, one row per training prompt."""

    p_router: np.ndarray  # (n, T) out-of-fold router P(pass)
    v: np.ndarray  # (n, T, contexts) out-of-fold verifier P(pass)
    q: np.ndarray  # (n, T) recorded scores
    c: np.ndarray  # (n, T) call costs
    c2: np.ndarray  # (n,) second-opinion call cost
    has_second: bool
    z: np.ndarray  # (n, T - 1) log predicted cost of the next tier over its typical cost
    # (n, T) each tier's cost predicted from the prompt alone, over its scale (start_lambda)
    c_hat: np.ndarray | None = None


_DATA_VERSION = 2


def save_cascade_data(d: CascadeData, path: Path, max_calls: int) -> None:
    """The out-of-fold matrices the cascade policy was fitted on, so `tier-router policy`
    refits it to another goal without retraining: one float64 .npy (no pickles), a header
    (version, n, tiers, contexts, second opinion, max calls) then the arrays in order."""
    n, tiers = d.q.shape
    head = [_DATA_VERSION, n, tiers, d.v.shape[2], float(d.has_second), max_calls]
    c_hat = d.c_hat if d.c_hat is not None else np.zeros_like(d.q)
    parts = [d.p_router, d.v, d.q, d.c, d.c2, d.z, c_hat]
    flat = np.concatenate([np.asarray(head, dtype=np.float64), *(np.ravel(a) for a in parts)])
    np.save(path, flat.astype(np.float64), allow_pickle=False)


def load_cascade_data(path: Path) -> tuple[CascadeData, int]:
    try:
        flat = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path.name}: unreadable cascade data ({e})") from None
    if flat.ndim != 1 or len(flat) < 6 or int(flat[0]) != _DATA_VERSION:
        raise ValueError(f"{path.name}: not cascade data this tier-router reads")
    n, tiers, k, second, max_calls = (int(x) for x in flat[1:6])
    shapes = [(n, tiers), (n, tiers, k), (n, tiers), (n, tiers), (n,), (n, tiers - 1), (n, tiers)]
    sizes = [int(np.prod(sh)) for sh in shapes]
    if len(flat) != 6 + sum(sizes):
        raise ValueError(f"{path.name}: cascade data arrays do not line up")
    arrays, at = [], 6
    for sh, size in zip(shapes, sizes, strict=True):
        arrays.append(flat[at : at + size].reshape(sh))
        at += size
    p_router, v, q, c, c2, z, c_hat = arrays
    return CascadeData(p_router, v, q, c, c2, bool(second), z, c_hat), max_calls


def simulate(pol: CascadePolicy, d: CascadeData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt cost, quality and calls of `pol`: router.cascade.walk's rules on matrices."""
    n, tiers = d.q.shape
    rows = np.arange(n)
    if pol.start_lambda >= 0 and d.c_hat is not None:
        start = np.argmax(d.p_router - pol.start_lambda * d.c_hat, axis=1)
    else:
        start = _start(d.p_router, np.asarray(pol.start))
    cost = np.zeros(n)
    calls = np.zeros(n, dtype=np.int64)
    final = np.full(n, -1)
    asked = np.zeros(n, dtype=bool)
    for t in range(tiers):
        at = (final < 0) & (start <= t)
        if not at.any():
            continue
        cost[at] += d.c[at, t]
        calls[at] += 1
        if t == tiers - 1:
            final[at] = t
            break
        prev = start < t
        shift = pol.cost_weight[t] * d.z[:, t]
        v = d.v[rows, t, asked * WITH_SECOND + prev * WITH_PREV] + shift
        capped = at & (calls >= pol.max_calls)
        final[capped] = t
        at &= ~capped
        acc = at & (v >= pol.accept[t])
        final[acc] = t
        if d.has_second:
            cons = at & ~acc & ~asked & (v >= pol.consult[t])
            cost[cons] += d.c2[cons]
            calls[cons] += 1
            asked |= cons
            v2 = d.v[rows, t, WITH_SECOND + prev * WITH_PREV] + shift
            final[cons & ((v2 >= pol.accept_second[t]) | (calls >= pol.max_calls))] = t
    return cost, d.q[rows, final], calls


def _start(p: np.ndarray, th: np.ndarray) -> np.ndarray:
    ok = p[:, :-1] >= th
    return np.where(ok.any(axis=1), ok.argmax(axis=1), p.shape[1] - 1)
