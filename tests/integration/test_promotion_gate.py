"""The promotion gate and the comparison table, on real bundles scored on real outcomes
(no MLflow server: `judge` and `format_table` are what promote/compare/retrain print)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from router import Router
from router.bundle import Manifest, write_manifest
from router.policy import ThresholdPolicy
from training.compare import EvalData, VersionEval, evaluate_router, format_table, judge, paired


def _with_policy(src: Path, dst: Path, thresholds: tuple[float, ...], goal: str) -> Path:
    """The same model with another policy, as a re-fit with another --goal would give."""
    shutil.copytree(src, dst)
    pol = ThresholdPolicy.from_json((dst / "policy.json").read_text())
    pol = dataclasses.replace(pol, thresholds=thresholds, goal=goal)
    (dst / "policy.json").write_text(pol.to_json())
    m = Manifest.read(dst)
    write_manifest(dst, m.router_version + "-" + goal, {})
    return dst


@pytest.fixture(scope="module")
def evals(
    trained_bundle: Path, small_outcomes: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[VersionEval, VersionEval, EvalData]:
    data = EvalData(small_outcomes, "test")
    champ = evaluate_router(Router.load(trained_bundle), data, "v1")
    n = len(champ.tiers) - 1
    cheap = _with_policy(trained_bundle, tmp_path_factory.mktemp("b") / "cheap", (0.0,) * n,
                         "haiku")  # every prompt to the cheapest tier
    return champ, evaluate_router(Router.load(cheap), data, "v2"), data


def test_gate_refuses_a_policy_that_ships_lower_quality(
    evals: tuple[VersionEval, VersionEval, EvalData],
) -> None:
    champ, cheap, _ = evals
    (c0, q0), (c1, q1) = champ.policy_point, cheap.policy_point
    assert q1 < q0 - 0.02 and c1 < c0  # cheaper, and clearly worse where it is served
    v = judge(cheap, champ)
    assert not v.ok
    [reason] = v.reasons  # same model, same envelope: only the policy point differs
    assert f"{q1:.4f} vs {q0:.4f}" in reason and "--max-quality-drop" in reason
    text = v.explain()
    assert "policy operating points" in text and f"${c1:.6f}/req" in text
    assert judge(cheap, champ, max_quality_drop=q0 - q1 + 1e-9).ok
    assert judge(champ, cheap).ok  # more quality, at the cost the envelope allows
    assert judge(champ, champ).ok
    pr = paired(cheap, champ, 100)
    assert pr.reading("policy.quality") == "worse" and pr.reading("policy.cost") == "better"
    assert pr.diffs["policy.quality"]["diff"] == pytest.approx(q1 - q0)


def test_compare_table_keeps_long_versions_whole_and_columns_aligned(
    evals: tuple[VersionEval, VersionEval, EvalData],
) -> None:
    champ, cheap, data = evals
    long = [
        dataclasses.replace(champ, label="champion v12", router_version="fast-20260101-000000-"
                            "0123456789abcdef", logged={"route.p50_us": 11.5}),
        dataclasses.replace(cheap, label="challenger v13", router_version="accurate-20260102-"
                            "123456-fedcba9876543210-retrain", logged={"route.p50_us": 9.25}),
    ]  # fmt: skip
    table = format_table(long, data)
    lines = table.splitlines()
    assert all(e.router_version in table for e in long)
    assert len({len(ln) for ln in lines[1:]}) == 1  # every row ends where the header ends
    # each column's values end under its label
    head = lines[1]
    ends = [head.index(e.label) + len(e.label) for e in long]
    for ln in lines[2:]:
        cells = ln.split()
        assert ln.rstrip().endswith(cells[-1]) and len(ln) == ends[-1]
        assert ln[: ends[0]].rstrip().endswith(cells[-2])
    assert any(ln.startswith("route.p50_us (run)") for ln in lines)
