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

from router.bundle import BundleError, Manifest, decision_digest, staged_bundle, write_manifest
from router.ladder import Ladder
from router.policy import POLICY_FILE
from router.router import LADDER_FILE
from training.operating_points import (
    POLICY_DATA,
    PolicyData,
    format_table,
    tradeoff_table,
)
from training.policy_fit import fit_threshold, parse_goal

REPORT_FILE = "train_report.json"


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
        if (tmp / REPORT_FILE).exists():
            report = json.loads((tmp / REPORT_FILE).read_text("utf-8"))
            report["goal"] = goal.text
            report["policy_expected"] = policy.expected
            report["policy_refit_from"] = manifest.router_version
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        kind = str(manifest.info.get("featurizer", "fast"))
        version = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{decision_digest(tmp)[:8]}"
        info = {k: v for k, v in manifest.info.items() if k != "runtime"}
        info.update(
            {
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "goal": goal.text,
                "policy_refit_from": manifest.router_version,
            }
        )
        write_manifest(tmp, version, info)
    table = format_table(tradeoff_table(data, ladder), data, ladder)
    return Refit(
        target,
        version,
        policy.thresholds,
        policy.expected,
        table,
        time.monotonic() - t0,
    )
