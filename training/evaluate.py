"""Router evaluation: the cost-quality curve and its summary metrics.

Definitions follow the design doc: sweep the router's decision rule (a P(pass)
threshold, and a utility trade-off P - lambda * cost), keep the upper concave
non-decreasing envelope of the (avg cost, avg quality) points together with the fixed
tiers (mixing two policies is allowed), then
  pgr_auc      mean share of the cheapest->top quality gap recovered, over costs from
               always-cheapest to always-top;
  cost_at_top  lowest cost reaching always-top quality, as a fraction of its cost;
  cost_at_mid  the same against the middle tier;
  best_q       the best quality on the curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from router.ladder import Ladder
from router.tokens import prompt_tokens

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DEFAULT_OUTPUT_TOKENS = 200.0
Point = tuple[float, float]


def _input_tokens(prompts: Sequence[str] | np.ndarray) -> np.ndarray:
    """ceil(chars/4) per prompt, from the texts or (an integer array) their lengths: a row
    logged as router features has its length but no text."""
    if isinstance(prompts, np.ndarray):
        return np.array([prompt_tokens(int(n)) for n in prompts], dtype=np.float64)
    return np.array([prompt_tokens(len(p)) for p in prompts], dtype=np.float64)


def prompt_costs(
    prompts: Sequence[str] | np.ndarray, output_tokens: np.ndarray, ladder: Ladder
) -> np.ndarray:
    """Dollar cost per prompt and tier: ceil(chars/4) input tokens, recorded output tokens.
    `prompts`: the texts, or their lengths in characters (LabelSet.prompt_chars).

    Only a missing count (NaN) becomes DEFAULT_OUTPUT_TOKENS; a recorded 0 costs no output.
    ../shared/tools/routeval.py reads a recorded 0 as missing, so it differs from this
    only for a recorded 0.
    """
    in_tok = _input_tokens(prompts)
    out = np.where(np.isnan(output_tokens), DEFAULT_OUTPUT_TOKENS, output_tokens)
    pin = np.array([t.price_in_per_mtok for t in ladder.tiers])
    pout = np.array([t.price_out_per_mtok for t in ladder.tiers])
    return (in_tok[:, None] * pin + out * pout) / 1e6


def knowable_costs(
    c: np.ndarray, prompts: Sequence[str] | np.ndarray, ladder: Ladder
) -> np.ndarray:
    """The costs a router can know before the call: each prompt's input cost plus the
    tier's mean output cost over these rows (as ../shared/tools/routeval.py decides with).
    Deciding with `c` itself leaks each answer's recorded length into the decision."""
    in_tok = _input_tokens(prompts)
    c_in = in_tok[:, None] * np.array([t.price_in_per_mtok for t in ladder.tiers]) / 1e6
    return c_in + (c - c_in).mean(axis=0)


def sweep_points(
    p: np.ndarray, q: np.ndarray, c: np.ndarray, c_decide: np.ndarray | None = None
) -> list[Point]:
    """Threshold and utility sweeps, placed at costs c; the utility sweep decides with
    c_decide (knowable_costs; None = c itself, the older leaky sweep)."""
    n, t = p.shape
    cd = c if c_decide is None else c_decide
    rows = np.arange(n)
    pts: list[Point] = []
    for tau in np.linspace(0.0, 1.0, 101):
        ok = p >= tau
        pick = np.where(ok.any(axis=1), ok.argmax(axis=1), t - 1)
        pts.append((float(c[rows, pick].mean()), float(q[rows, pick].mean())))
    scale = float(cd.mean()) or 1.0
    for lam in np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 120)]):
        pick = np.argmax(p - lam * cd / scale, axis=1)
        pts.append((float(c[rows, pick].mean()), float(q[rows, pick].mean())))
    return pts


def upper_envelope(points: list[Point]) -> list[Point]:
    """Upper concave hull, then only its rising part (spending more must buy quality)."""
    hull: list[Point] = []
    for x, y in sorted(set(points)):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (y - y1) >= (y2 - y1) * (x - x1):
                hull.pop()
            else:
                break
        hull.append((x, y))
    rising = [hull[0]]
    for pt in hull[1:]:
        if pt[1] > rising[-1][1]:
            rising.append(pt)
    return rising


def quality_at(env: list[Point], cost: float) -> float:
    if cost < env[0][0]:
        return float("nan")
    for (x1, y1), (x2, y2) in pairwise(env):
        if x1 <= cost <= x2:
            return y1 + (y2 - y1) * (cost - x1) / (x2 - x1) if x2 > x1 else max(y1, y2)
    return env[-1][1]


def cost_for_quality(env: list[Point], target: float) -> float:
    prev = env[0]
    for x, y in env:
        if y >= target:
            (x0, y0) = prev
            if y == y0:
                return x
            return x0 + (x - x0) * max(0.0, target - y0) / (y - y0)
        prev = (x, y)
    return float("inf")


def envelope_metrics(points: list[Point], fixed: list[Point]) -> dict[str, float]:
    """The design doc's metrics from operating points and the fixed tiers (cheapest first):
    one definition for a router's sweep and a cascade's replayed points."""
    env = upper_envelope(points + fixed)
    t = len(fixed)
    (c0, q0), (cm, qm), (c1, q1) = fixed[0], fixed[t // 2], fixed[-1]
    gap = q1 - q0
    grid = np.linspace(c0, c1, 201)
    pgr = [(quality_at(env, g) - q0) / gap for g in grid] if gap else [float("nan")]
    return {
        "pgr_auc": float(np.nanmean(pgr)),
        "cost_at_top": cost_for_quality(env, q1) / c1,
        "cost_at_mid": cost_for_quality(env, qm) / cm,
        "best_q": max(y for _, y in env),
    }


def curve_metrics(
    p: np.ndarray, q: np.ndarray, c: np.ndarray, c_decide: np.ndarray | None = None
) -> dict[str, float]:
    fixed = [(float(c[:, i].mean()), float(q[:, i].mean())) for i in range(q.shape[1])]
    return envelope_metrics(sweep_points(p, q, c, c_decide), fixed)


METRICS = ("pgr_auc", "cost_at_top", "cost_at_mid", "best_q")


def _resampled_metrics(
    routers: list[np.ndarray], q: np.ndarray, c: np.ndarray, rounds: int, seed: int
) -> list[dict[str, list[float]]]:
    """Curve metrics of each router over the same `rounds` resamples of the prompts."""
    rng = np.random.default_rng(seed)
    n = len(q)
    draws: list[dict[str, list[float]]] = [{k: [] for k in METRICS} for _ in routers]
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        for p, d in zip(routers, draws, strict=True):
            m = curve_metrics(p[idx], q[idx], c[idx])
            for k in METRICS:
                d[k].append(m[k])
    return draws


def _check_settings(rounds: int, level: float) -> None:
    if rounds < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need rounds >= 1 and 0 < level < 1, got {rounds}, {level}")


def _percentiles(values: list[float], level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    with np.errstate(invalid="ignore"):  # inf - inf when neither router reaches a target
        lo, hi = np.percentile(np.array(values), [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_intervals(
    p: np.ndarray,
    q: np.ndarray,
    c: np.ndarray,
    rounds: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Percentile intervals of the curve metrics over prompts resampled with replacement.

    A test split of a few hundred or thousand prompts is one draw: on the public files
    pgr_auc moves by 0.016-0.075 (one standard deviation) between resamples, so a
    difference smaller than the interval says little about which router is better.
    """
    _check_settings(rounds, level)
    (draws,) = _resampled_metrics([p], q, c, rounds, seed)
    out: dict[str, dict[str, float]] = {}
    for k, v in draws.items():
        lo, hi = _percentiles(v, level)
        out[k] = {"lo": lo, "hi": hi}
    return out


def paired_difference(
    p: np.ndarray,
    base: np.ndarray,
    q: np.ndarray,
    c: np.ndarray,
    rounds: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Each metric of router `p` minus router `base`, both scored on the same resamples.

    Two routers on one split share its luck: the spread of their difference is several
    times narrower than either router's own interval, so this is the interval that says
    whether a new version really is better or worse. Returns {"diff", "lo", "hi"} per
    metric; "diff" is the difference on the prompts as they are.
    """
    if p.shape != base.shape or len(p) != len(q):
        raise ValueError(f"routers must score the same prompts: {p.shape} vs {base.shape}")
    _check_settings(rounds, level)
    own, ref = _resampled_metrics([p, base], q, c, rounds, seed)
    point, point_ref = curve_metrics(p, q, c), curve_metrics(base, q, c)
    out: dict[str, dict[str, float]] = {}
    for k in METRICS:
        with np.errstate(invalid="ignore"):
            diffs = (np.array(own[k]) - np.array(ref[k])).tolist()
        lo, hi = _percentiles(diffs, level)
        out[k] = {"diff": point[k] - point_ref[k], "lo": lo, "hi": hi}
    return out


def policy_point(choice: np.ndarray, q: np.ndarray, c: np.ndarray) -> Point:
    rows = np.arange(len(choice))
    return float(c[rows, choice].mean()), float(q[rows, choice].mean())


def full_report(
    p: np.ndarray, q: np.ndarray, c: np.ndarray, choice: np.ndarray | None, seed: int = 0
) -> dict[str, object]:
    """Router metrics next to always-<tier>, random and oracle references."""
    t = q.shape[1]
    rng = np.random.default_rng(seed)
    rep: dict[str, object] = {
        "n": len(q),
        "router": curve_metrics(p, q, c),
        "random": curve_metrics(rng.random(p.shape), q, c),
        "oracle": curve_metrics((q >= 0.5).astype(float), q, c),
        "always": {
            i: {"quality": float(q[:, i].mean()), "cost": float(c[:, i].mean())} for i in range(t)
        },
    }
    if choice is not None:
        pc, pq = policy_point(choice, q, c)
        rep["policy"] = {
            "quality": pq,
            "cost": pc,
            "cost_vs_top": pc / float(c[:, -1].mean()),
            "tier_mix": np.bincount(choice, minlength=t).tolist(),
        }
    return rep


def plot_curves(
    curves: dict[str, list[Point]],
    fixed: list[tuple[str, Point]],
    path: Path,
    title: str,
    policy: Point | None = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    styles = {"oracle": ":", "random": "--"}
    for name, env in curves.items():
        xs, ys = zip(*env, strict=True)
        ax.plot(xs, ys, styles.get(name.split()[0], "-"), marker=".", markersize=3, label=name)
    for name, (x, y) in fixed:
        ax.scatter([x], [y], s=40, zorder=5)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, -10))
    if policy is not None:
        ax.scatter(
            [policy[0]],
            [policy[1]],
            marker="*",
            s=160,
            color="black",
            zorder=6,
            label="bundle policy",
        )
    return save_cost_quality_plot(fig, ax, path, title)


def save_cost_quality_plot(fig: Figure, ax: Axes, path: Path, title: str) -> Path:
    """Axis labels, grid and legend every cost-quality plot shares; saved, then closed."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("average cost per request ($)")
    ax.set_ylabel("average quality")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def router_curve(p: np.ndarray, q: np.ndarray, c: np.ndarray) -> list[Point]:
    t = q.shape[1]
    fixed = [(float(c[:, i].mean()), float(q[:, i].mean())) for i in range(t)]
    return upper_envelope(sweep_points(p, q, c) + fixed)


def calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[float]:
    """Expected calibration error per tier (equal-width bins), unknown labels skipped."""
    out = []
    for j in range(p.shape[1]):
        m = ~np.isnan(y[:, j])
        pj, yj = p[m, j], y[m, j]
        if not len(pj):
            out.append(float("nan"))
            continue
        idx = np.minimum((pj * bins).astype(int), bins - 1)
        err = 0.0
        for b in range(bins):
            sel = idx == b
            if sel.any():
                err += sel.sum() * abs(pj[sel].mean() - yj[sel].mean())
        out.append(float(err / len(pj)))
    return out
