"""`tier-router policy`: refit a bundle's thresholds to a new goal, without retraining.

The bundle's POLICY_DATA (training/operating_points.py) holds the out-of-fold P(pass),
quality and cost its policy was fitted on, so the new thresholds are exactly what
`train --goal G` would have fitted on the same predictions. The result is a new bundle
version: a copy with the new policy.json, a new manifest and router version, written
to a temporary directory beside the target and renamed into place, so a reader never
sees half a bundle. By default it goes to a new directory (`--out`); `--in-place`
replaces the bundle (the old one is renamed aside, then removed).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.bundle import (
    CASCADE_DATA,
    CASCADE_FILE,
    LADDER_FILE,
    POLICY_DATA,
    POLICY_FILE,
    REPORT_FILE,
    BundleError,
    Manifest,
    seal_bundle,
    staged_bundle,
)
from router.cascade import CascadeFile
from router.ladder import Ladder
from training.cascade_fit import refit_cascade
from training.cascade_sim import load_cascade_data
from training.operating_points import (
    PolicyData,
    format_table,
    tradeoff_table,
)
from training.policy_fit import Goal, fit_threshold, parse_goal


@dataclass(frozen=True)
class Refit:
    bundle: Path
    router_version: str
    thresholds: tuple[float, ...]
    expected: dict[str, Any]
    table: str
    seconds: float


def load_policy_data(bundle: Path) -> tuple[Manifest, Ladder, PolicyData]:
    """The verified bundle's ladder and refit data (BundleError when absent or damaged)."""
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: `policy` needs a bundle directory (extract archives first)")
    manifest = Manifest.read(bundle)
    manifest.verify(bundle)
    if POLICY_DATA not in manifest.files:
        raise BundleError(
            f"{bundle}: the bundle keeps no {POLICY_DATA} (trained before `policy` existed); "
            "re-train it once to refit its policy later"
        )
    ladder = Ladder.load(bundle / LADDER_FILE)
    try:
        data = PolicyData.load(bundle / POLICY_DATA, len(ladder))
    except ValueError as e:
        raise BundleError(f"{bundle}: {e}") from None
    return manifest, ladder, data


def refit_policy(bundle: Path, goal_text: str, out: Path | None, *, in_place: bool) -> Refit:
    t0 = time.monotonic()
    if (out is None) == (not in_place):
        raise ValueError("give either --out DIR (a new bundle version) or --in-place")
    if out is not None and out.exists():
        raise FileExistsError(f"--out {out} already exists; choose a new directory")
    manifest, ladder, data = load_policy_data(bundle)
    goal = parse_goal(goal_text, ladder)
    p, q, c = data.fit_rows()
    policy = fit_threshold(p, q, c, goal, ladder)
    target = bundle if in_place else out
    assert target is not None
    with staged_bundle(target, replace=in_place) as tmp:
        for name in manifest.files:
            shutil.copy2(bundle / name, tmp / name)
        (tmp / POLICY_FILE).write_text(policy.to_json() + "\n", encoding="utf-8")
        cascade = _refit_cascade(tmp, goal, policy.thresholds)
        if (tmp / REPORT_FILE).exists():
            report = json.loads((tmp / REPORT_FILE).read_text("utf-8"))
            report["goal"] = goal.text
            report["policy_expected"] = policy.expected
            report["policy_refit_from"] = manifest.router_version
            if cascade is not None and isinstance(report.get("cascade"), dict):
                report["cascade"]["cascade_policy"] = cascade.policy.to_dict()
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        kind = str(manifest.info.get("featurizer", "fast"))
        info = {k: v for k, v in manifest.info.items() if k != "runtime"}
        info.update({"goal": goal.text, "policy_refit_from": manifest.router_version})
        version = seal_bundle(tmp, kind, info).router_version
    table = format_table(tradeoff_table(data, ladder), data, ladder)
    if cascade is not None:
        e = cascade.policy.expected
        table += (
            f"\ncascade policy for {goal.text!r}: quality {e['validation_quality']:.4f} at "
            f"{e['validation_cost_vs_top']:.1%} of always-top cost, "
            f"{e['validation_calls_per_request']:.2f} calls per request (out of fold)"
        )
    return Refit(
        target,
        version,
        policy.thresholds,
        policy.expected,
        table,
        time.monotonic() - t0,
    )


def _refit_cascade(bundle: Path, goal: Goal, thresholds: tuple[float, ...]) -> CascadeFile | None:
    """Refit the bundle's cascade.json to the goal, when it has one and its data."""
    if not (bundle / CASCADE_FILE).exists():
        return None
    if not (bundle / CASCADE_DATA).exists():
        raise BundleError(
            f"{bundle}: the bundle's cascade has no {CASCADE_DATA} to refit from (trained "
            "before `policy` could refit cascades): retrain it to change the cascade's goal"
        )
    try:
        current = CascadeFile.from_json((bundle / CASCADE_FILE).read_text("utf-8"))
        data, max_calls = load_cascade_data(bundle / CASCADE_DATA)
    except ValueError as e:
        raise BundleError(f"{bundle}: {e}") from None
    cascade = refit_cascade(
        current,
        data,
        max_calls,
        goal_tier=goal.tier_index,
        goal_points=goal.points,
        goal_text=goal.text,
        routing_start=thresholds,
    )
    (bundle / CASCADE_FILE).write_text(cascade.to_json() + "\n", encoding="utf-8")
    return cascade
