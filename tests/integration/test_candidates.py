"""Model candidates on real data: every family exports the one form the runtime reads
(router/softmax_sets.py), route() evaluates it without ONNX Runtime, and selection
scores them honestly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from realdata import LADDERS, require_shared, slice_outcomes

from router import Router
from router.bundle import write_manifest
from router.router import FEATURES_INPUT
from training.accurate_reference import format_line, plain_logistic_oof
from training.candidates import BlendModel, LogisticConfig, LogisticModel, SetModel
from training.evaluate import curve_metrics, knowable_costs
from training.model import ModelConfig, SoftClusterModel
from training.onnx_graph import export_model
from training.operating_points import PolicyData
from training.pipeline import TrainConfig, TrainResult, train
from training.policy_fit import _choose, fit_threshold, parse_goal
from training.selection import fast_pgr_auc

CFG = ModelConfig(n_clusters=(8, 24))


@pytest.fixture(scope="module")
def mmlu(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    src = require_shared("mmlu_pro.jsonl.gz")
    data = slice_outcomes(src, tmp_path_factory.mktemp("d") / "mmlu.jsonl", 700, 150)
    out = tmp_path_factory.mktemp("b") / "mmlu"
    return train(
        TrainConfig(
            data,
            LADDERS / "mmlu_pro.toml",
            out,
            model=CFG,
            folds=3,
            goal="top",
            accurate_reference=True,
        )
    )


def _families(res: TrainResult) -> dict[str, SetModel | SoftClusterModel]:
    f, y = res.features, res.labels.passed
    soft = SoftClusterModel(CFG).fit(f, y, res.labels.weights, res.labels.tasks)
    lr = LogisticModel(CFG, LogisticConfig(c=0.01)).fit(f, y, res.labels.weights)
    return {"soft_cluster": soft, "logistic": lr, "blend": BlendModel(soft, lr, 0.4)}


def test_selection_reports_every_candidate_out_of_fold(mmlu: TrainResult) -> None:
    sel = mmlu.report["model_selection"]
    assert set(sel["candidates"]) == {"logistic", "soft_cluster", "blend"}
    assert sel["selected"] in sel["candidates"]
    for fig in sel["candidates"].values():
        assert 0.0 < fig["pgr_auc"] < 1.5 and fig["cost_at_mid"] > 0
    # The exported policy was fitted on the selected family's out-of-fold predictions.
    assert mmlu.report["validation"]["pgr_auc"] == pytest.approx(
        sel["candidates"][sel["selected"]]["pgr_auc"], abs=0.03
    )
    assert "routing alone" in mmlu.report["routing_alone"]


@pytest.mark.parametrize("family", ["soft_cluster", "logistic", "blend"])
def test_every_family_exports_the_graph_route_reads(
    mmlu: TrainResult, family: str, tmp_path: Path
) -> None:
    model = _families(mmlu)[family]
    bundle = tmp_path / family
    shutil.copytree(mmlu.bundle, bundle)
    sets = model.softmax_sets()
    assert sets._q is not None  # inside the bounds of the fast single-request evaluation
    export_model(sets, bundle, "test")
    (bundle / "joint_space.json").write_text(model.space_.to_json() + "\n", encoding="utf-8")
    write_manifest(bundle, f"test-{family}", {})
    r = Router.load(bundle)  # checks the arrays against ONNX Runtime on the graph
    prompts = [*mmlu.labels.prompts[:40], "", "   ", "Hola, ¿qué tal?"]
    batch = r.p_pass_batch(prompts)  # ONNX Runtime
    one = np.array([list(r.route(t).p_pass.values()) for t in prompts])
    assert np.abs(one - batch).max() <= 1e-5
    x = r.feeds(prompts)[FEATURES_INPUT]
    expected = model.predict_proba(mmlu.features.take(np.arange(40)))
    assert np.abs(batch[:40] - expected).max() <= 1e-5
    assert np.abs(np.array([sets.p_pass_one(v) for v in x]) - batch).max() <= 1e-5
    if family != "soft_cluster":  # logistic output moves between prompts
        assert float(np.ptp(batch[:40, 0])) > 0.05


def test_selection_and_validation_decide_with_knowable_costs(mmlu: TrainResult) -> None:
    """The validation figure (and selection's criterion) is the sweep that decides with
    knowable costs (input + the tier's mean output cost), as routeval's does."""
    data = PolicyData.load(mmlu.bundle / "policy_data.npy", len(mmlu.ladder))
    p, q, c = data.fit_rows()
    cd = knowable_costs(data.c, mmlu.labels.prompts, mmlu.ladder)[data.complete]
    assert mmlu.report["validation"]["pgr_auc"] == pytest.approx(
        curve_metrics(p, q, c, cd)["pgr_auc"], abs=1e-9
    )
    assert curve_metrics(p, q, c)["pgr_auc"] != pytest.approx(  # not the leaky sweep
        mmlu.report["validation"]["pgr_auc"], abs=1e-9
    )


def test_train_reports_what_the_accurate_featurizer_would_give(mmlu: TrainResult) -> None:
    ref = mmlu.report["accurate_reference"]
    assert 0.0 < ref["accurate_oof_pgr_auc"] < 1.5
    assert ref["selected_oof_pgr_auc"] == pytest.approx(
        mmlu.report["validation"]["pgr_auc"], abs=1e-9
    )
    assert ref["selected_minus_accurate"] == pytest.approx(
        ref["selected_oof_pgr_auc"] - ref["accurate_oof_pgr_auc"]
    )
    assert ref["difference_sd"] > 0 and ref["encode_s"] >= 0
    line = format_line(ref, mmlu.report["model_selection"]["selected"])
    assert f"{ref['accurate_oof_pgr_auc']:.3f}" in line and "accurate featurizer" in line


def test_plain_logistic_oof_is_out_of_fold_and_masks_unknown_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = np.stack([(x[:, 0] > 0) * 1.0, (x[:, 1] > 0) * 1.0], axis=1)
    y[::7, 1] = np.nan  # unknown: left out of tier 1's fit, still predicted
    fold = np.arange(300) % 3
    p = plain_logistic_oof(x, y, fold)
    assert p.shape == y.shape and np.isfinite(p).all()
    assert ((p[:, 0] > 0.5) == (y[:, 0] > 0.5)).mean() > 0.9
    known = ~np.isnan(y[:, 1])
    assert ((p[known, 1] > 0.5) == (y[known, 1] > 0.5)).mean() > 0.9
    # A fold's predictions come from the other folds only: relabel fold 0, its own
    # predictions do not move, every other fold's do.
    y2 = y.copy()
    y2[fold == 0, 0] = 1 - y2[fold == 0, 0]
    p2 = plain_logistic_oof(x, y2, fold)
    assert np.allclose(p2[fold == 0, 0], p[fold == 0, 0])
    assert not np.allclose(p2[fold == 1, 0], p[fold == 1, 0])


def test_fast_pgr_auc_is_curve_metrics(mmlu: TrainResult) -> None:
    data = np.load(mmlu.bundle / "policy_data.npy", allow_pickle=False)
    p, q, c = np.split(data, 3, axis=1)
    keep = ~np.isnan(q).any(axis=1)
    p, q, c = p[keep], q[keep], c[keep]
    for probs in (p, np.clip(p + np.random.default_rng(0).normal(0, 0.1, p.shape), 0, 1)):
        assert fast_pgr_auc(probs, q, c) == pytest.approx(
            curve_metrics(probs, q, c)["pgr_auc"], abs=1e-9
        )


def test_batched_threshold_grid_matches_one_at_a_time(mmlu: TrainResult) -> None:
    data = np.load(mmlu.bundle / "policy_data.npy", allow_pickle=False)
    p, q, c = (a[~np.isnan(a).any(axis=1)] for a in np.split(data, 3, axis=1))
    rows = np.arange(len(p))
    grid = np.round(np.linspace(0.0, 1.0, 51), 4)
    for text in ("top", "top-1", "mid", "cheapest-0"):
        goal = parse_goal(text, mmlu.ladder)
        target = float(q[:, goal.tier_index].mean()) - goal.points / 100.0
        best = None
        for combo in np.array(np.meshgrid(grid, grid)).T.reshape(-1, 2):
            pick = _choose(p, combo)
            cost, qual = float(c[rows, pick].mean()), float(q[rows, pick].mean())
            if qual >= target - 1e-12 and (best is None or (cost, -qual) < best[:2]):
                best = (cost, -qual, tuple(float(v) for v in combo))
        assert best is not None
        assert fit_threshold(p, q, c, goal, mmlu.ladder).thresholds == best[2]
