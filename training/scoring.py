"""Score an outcomes file with a bundle, and evaluate it against the recorded outcomes."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcomes import iter_outcomes
from router import Router
from training.answer_stats import reading_report
from training.cascade_eval import SystemCurve, system_curve, system_report
from training.evaluate import (
    bootstrap_intervals,
    full_report,
    plot_curves,
    prompt_costs,
    router_curve,
)
from training.labels import build_labels
from training.ladder_check import check_keys_present

log = logging.getLogger(__name__)


def score_file(
    router: Router, outcomes: Path, split: str | None, out: Path, batch: int = 256
) -> int:
    """One JSON line per prompt: id, p_pass per tier, chosen tier (the DESIGN contract)."""
    n = 0
    names = router.ladder.names
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        buf: list[tuple[str, str]] = []

        def flush() -> None:
            nonlocal n
            if not buf:
                return
            p = router.p_pass_batch([t for _, t in buf])
            pick = router.policy.choose(p)
            for (rid, _), row, k in zip(buf, p, pick, strict=True):
                rec = {
                    "id": rid,
                    "p_pass": dict(zip(names, map(float, row), strict=True)),
                    "tier": names[int(k)],
                }
                f.write(json.dumps(rec) + "\n")
            n += len(buf)
            buf.clear()

        for rec in iter_outcomes(outcomes, split):
            buf.append((rec.id, rec.prompt))
            if len(buf) >= batch:
                flush()
        flush()
    tmp.replace(out)
    return n


@dataclass(frozen=True)
class Evaluation:
    report: dict[str, Any]
    p: np.ndarray
    q: np.ndarray
    c: np.ndarray
    choice: np.ndarray
    prompts: list[str]
    system: SystemCurve | None = None  # the cascade's curve, when the bundle and file allow


def evaluate_bundle(
    router: Router, outcomes: Path, split: str | None, bootstrap: int = 0
) -> Evaluation:
    """Metrics on prompts that have a result for every tier (as the judge's check does).

    `bootstrap` > 0 adds 95% percentile intervals of the router's metrics from that many
    resamples of the prompts.
    """
    recs = list(iter_outcomes(outcomes, split))
    labels = build_labels(recs, router.ladder, min_tiers=len(router.ladder))
    if len(labels) == 0:
        # A key the rows do not have at all is a ladder/file mismatch: name it first.
        if recs:
            check_keys_present(
                router.ladder,
                f"{router.source}/ladder.toml",
                {k for r in recs for k in r.results},
                f"{outcomes} (split {split!r})",
                second_opinion=False,
            )
        raise ValueError(
            f"{outcomes}: no prompts in split {split!r} have results for every tier "
            f"({[t.outcomes_key for t in router.ladder.tiers]})"
        )
    t = time.monotonic()
    p = router.p_pass_batch(labels.prompts)
    log.info("scored %d prompts in %.1f s", len(labels), time.monotonic() - t)
    q = labels.scores
    c = prompt_costs(labels.prompts, labels.output_tokens, router.ladder)
    choice = router.policy.choose(p)
    rep = full_report(p, q, c, choice)
    rep["tiers"] = router.ladder.names
    rep["router_version"] = router.version
    rep["split"] = split
    rep["skipped_incomplete"] = labels.dropped
    system = system_curve(router, recs)
    if system is not None:
        rep["system"] = system_report(system)
        rep["answers_read"] = reading_report(recs, router.ladder)
    ev = Evaluation(rep, p, q, c, choice, labels.prompts, system)
    if bootstrap > 0:
        add_intervals(ev, bootstrap)
    return ev


def add_intervals(ev: Evaluation, rounds: int) -> None:
    """Add the router's 95% intervals over `rounds` resamples of the prompts to its report."""
    ev.report["router_interval"] = bootstrap_intervals(ev.p, ev.q, ev.c, rounds=rounds)
    ev.report["bootstrap_rounds"] = rounds


def write_plot(ev: Evaluation, names: list[str], path: Path, title: str) -> Path:
    rng = np.random.default_rng(0)
    curves = {
        "router": router_curve(ev.p, ev.q, ev.c),
        "random": router_curve(rng.random(ev.p.shape), ev.q, ev.c),
        "oracle": router_curve((ev.q >= 0.5).astype(float), ev.q, ev.c),
    }
    if ev.system is not None:
        curves["system (route, verify, escalate)"] = ev.system.envelope()
    fixed = [
        (f"always {n}", (float(ev.c[:, i].mean()), float(ev.q[:, i].mean())))
        for i, n in enumerate(names)
    ]
    pol = ev.report.get("policy")
    point = (pol["cost"], pol["quality"]) if isinstance(pol, dict) else None
    return plot_curves(curves, fixed, path, title, point)


def format_report(rep: dict[str, Any]) -> str:
    names = rep["tiers"]
    lines = [f"{rep['n']} prompts, split={rep['split']}, router {rep['router_version']}"]
    lines.append(
        f"{'':14s} {'pgr_auc':>8s} {'cost_at_top':>12s} {'cost_at_mid':>12s} {'best_q':>7s}"
    )
    for key in ("system", "router", "random", "oracle"):
        if key not in rep:
            continue
        m = rep[key]
        lines.append(
            f"{key:14s} {m['pgr_auc']:8.3f} {m['cost_at_top']:12.3f} {m['cost_at_mid']:12.3f} "
            f"{m['best_q']:7.3f}"
        )
    iv = rep.get("router_interval")
    if iv:
        lines.append(
            f"router, 95% intervals over {rep['bootstrap_rounds']} resamples of the prompts:\n  "
            + "  ".join(f"{k} [{v['lo']:.3f}, {v['hi']:.3f}]" for k, v in iv.items())
        )
    lines.append(f"{'':14s} {'quality':>8s} {'cost $/req':>12s}")
    for i, n in enumerate(names):
        a = rep["always"][i]
        lines.append(f"{'always ' + n:14s} {a['quality']:8.3f} {a['cost']:12.6f}")
    sysp = rep.get("system", {}).get("policy")
    if sysp:
        lines.append(
            f"{'system policy':14s} {sysp['quality']:8.3f} {sysp['cost']:12.6f}  "
            f"({sysp['cost_vs_top']:.1%} of always-top cost; "
            f"{sysp['calls_per_request']:.2f} calls per request, "
            f"{rep['system']['n']} prompts with answers)"
        )
    pol = rep.get("policy")
    if pol:
        mix = ", ".join(f"{n}={k}" for n, k in zip(names, pol["tier_mix"], strict=True))
        lines.append(
            f"{'bundle policy':14s} {pol['quality']:8.3f} {pol['cost']:12.6f}  "
            f"({pol['cost_vs_top']:.1%} of always-top cost; {mix})"
        )
    return "\n".join(lines)
