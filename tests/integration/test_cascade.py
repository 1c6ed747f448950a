"""Route -> verify -> escalate, trained on a slice of real recorded answers.

The verifier's ONNX graph against its fitted weights, training's matrix form of the cascade
against router.cascade.walk, the replay contract (scores removed, graded by the shared
cascadeval.py), and evaluate's system curve.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from realdata import SHARED_DATA

from outcomes import read_outcomes
from router import Router
from router.answer_features import prompt_options
from router.bundle import VERIFIER_MODEL, BundleError
from router.verifier import CONTEXTS, VERIFIER_INPUT, context_of, feature_vector
from tier_router.cli import main
from training.cascade_eval import system_curve
from training.cascade_sim import CascadeData, simulate
from training.recorded_answers import answer_text, call_cost
from training.replay import replay_records

TOOLS = SHARED_DATA.parent / "tools"  # beside the data, wherever TIER_ROUTER_SHARED_DATA puts it


@pytest.fixture(scope="module")
def router(cascade_train) -> Router:
    return Router.load(cascade_train.bundle)


def test_train_fits_the_verifier_and_cascade_when_answers_are_there(cascade_train, router) -> None:
    rep = cascade_train.report["cascade"]
    assert rep["second_opinion"] == "second"
    assert rep["cascade_points"] >= 20
    # Agreement with a second opinion must add to the answer alone on the cheapest tier.
    auc = rep["verifier_oof_auc"]
    assert auc["0.second"] > auc["0.alone"] + 0.05
    assert router.verifier is not None and router.cascade is not None
    for name in ("verifier.onnx", "verifier.json", "cascade.json"):
        assert name in router.manifest.files


def test_verifier_onnx_matches_the_fitted_weights_on_real_answers(cascade_train, router) -> None:
    import onnxruntime as ort

    fitted = cascade_train.cascade.verifier
    recs = read_outcomes(cascade_train.report["outcomes"], "test")[:60]
    keys = [t.outcomes_key for t in router.ladder.tiers]
    second_key = router.ladder.second_opinion.outcomes_key
    xs, cols, got = [], [], []
    p_all = router.p_pass_batch([r.prompt for r in recs])
    for rec, p in zip(recs, p_all, strict=True):
        opts = prompt_options(rec.prompt)
        second = router.verifier.read(rec.prompt, answer_text(rec, second_key), opts)
        prev = None
        for t, k in enumerate(keys):
            a = router.verifier.read(rec.prompt, answer_text(rec, k), opts)
            for s in (None, second):
                xs.append(feature_vector(a, float(p[t]), s, prev))
                cols.append(t * CONTEXTS + context_of(s, prev))
                got.append(router.verifier.p_pass(t, a, float(p[t]), s, prev))
            prev = a
    x = np.array(xs, dtype=np.float32)
    session = ort.InferenceSession(
        str(cascade_train.bundle / VERIFIER_MODEL), providers=["CPUExecutionProvider"]
    )
    onnx_p = session.run(None, {VERIFIER_INPUT: x})[0][np.arange(len(cols)), cols]
    z = x.astype(np.float64) @ fitted.weights + fitted.bias
    fitted_p = (1 / (1 + np.exp(-z)))[np.arange(len(cols)), cols]
    assert np.abs(onnx_p - fitted_p).max() < 1e-5
    assert np.abs(np.array(got) - fitted_p).max() < 1e-5
    assert len(set(np.round(got, 3))) > 20  # it discriminates, it is not a constant


def test_training_simulation_equals_the_runtime_walk(router, answers_slice) -> None:
    """training.cascade_sim.simulate (what the policy is fitted with) and router.cascade.walk
    (what replay and serving run) give the same calls and answer on every point."""
    recs = read_outcomes(answers_slice, "test")
    ladder = router.ladder
    keys = [t.outcomes_key for t in ladder.tiers]
    p = router.p_pass_batch([r.prompt for r in recs]).astype(np.float64)
    n, tiers = len(recs), len(keys)
    v = np.full((n, tiers, CONTEXTS), np.nan)
    z = np.zeros((n, tiers - 1))
    cost = router.cascade.cost
    for i, rec in enumerate(recs):
        opts = prompt_options(rec.prompt)
        second = router.verifier.read(
            rec.prompt, answer_text(rec, ladder.second_opinion.outcomes_key), opts
        )
        reads = [router.verifier.read(rec.prompt, answer_text(rec, k), opts) for k in keys]
        for t in range(tiers):
            prev = reads[t - 1] if t else None
            for s in (None, second):
                for pv in (None, prev) if t else (None,):
                    v[i, t, context_of(s, pv)] = router.verifier.p_pass(t, reads[t], p[i, t], s, pv)
            if t < tiers - 1:
                z[i, t] = cost.z(t + 1, len(answer_text(rec, keys[t])), len(rec.prompt))
    q = np.array([[r.results[k].score for k in keys] for r in recs])
    c = np.array([[call_cost(r.prompt, r, t) for t in ladder.tiers] for r in recs])
    c2 = np.array([call_cost(r.prompt, r, ladder.second_opinion) for r in recs])
    c_hat = np.array([cost.start_costs(len(r.prompt)) for r in recs])
    data = CascadeData(p, v, q, c, c2, True, z, c_hat)
    points = [router.cascade.policy, *router.cascade.points]
    replay_cost: dict[str, list[float]] = defaultdict(list)
    replay_q: dict[str, list[float]] = defaultdict(list)
    by_id = {r.id: r for r in recs}
    by_key = {t.outcomes_key: t for t in (*ladder.tiers, ladder.second_opinion)}
    for line in replay_records(router, recs):
        rec = by_id[line.id]
        replay_cost[line.point].append(
            sum(call_cost(rec.prompt, rec, by_key[k]) for k in line.calls)
        )
        replay_q[line.point].append(rec.results[line.final].score)
    for pol in points:
        sim_cost, sim_q, _ = simulate(pol, data)
        assert np.allclose(sim_cost, replay_cost[pol.label]), pol.label
        assert np.allclose(sim_q, replay_q[pol.label]), pol.label


def _strip_scores(src: Path, dst: Path) -> Path:
    with src.open() as f, gzip.open(dst, "wt") as g:
        for line in f:
            r = json.loads(line)
            if r.get("split") == "test":
                for res in r["results"].values():
                    res.pop("score", None)
            g.write(json.dumps(r) + "\n")
    return dst


def test_replay_without_scores_is_graded_by_cascadeval(
    router, cascade_train, answers_slice, tmp_path
) -> None:
    stripped = _strip_scores(answers_slice, tmp_path / "no_scores.jsonl.gz")
    out = tmp_path / "replay.jsonl"
    assert (
        main(
            [
                "replay",
                "--bundle",
                str(cascade_train.bundle),
                "--outcomes",
                str(stripped),
                "--split",
                "test",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    n_test = len(read_outcomes(answers_slice, "test"))
    points = {ln["point"] for ln in lines}
    assert "policy" in points and len(points) >= 20
    assert len(lines) == n_test * len(points)
    ladder = router.ladder
    keys = [t.outcomes_key for t in ladder.tiers]
    second = ladder.second_opinion.outcomes_key
    cap = router.cascade.policy.max_calls
    for ln in lines:
        assert ln["final"] in keys and ln["final"] == [k for k in ln["calls"] if k != second][-1]
        assert 1 <= len(ln["calls"]) <= cap and ln["calls"].count(second) <= 1
        tiers = [keys.index(k) for k in ln["calls"] if k != second]
        assert tiers == list(range(tiers[0], tiers[0] + len(tiers)))  # only ever up, one by one
    # The outside grader and the project's own evaluation agree on every metric.
    sys.path.insert(0, str(TOOLS))
    try:
        import cascadeval
    finally:
        sys.path.remove(str(TOOLS))
    outside = cascadeval.evaluate(
        str(answers_slice),
        str(out),
        keys,
        {
            second: (
                ladder.second_opinion.price_in_per_mtok,
                ladder.second_opinion.price_out_per_mtok,
            )
        },
    )
    ours = system_curve(router, read_outcomes(answers_slice, "test"))
    assert ours is not None
    for k, v in ours.metrics().items():
        assert outside[k] == pytest.approx(v, abs=1e-9), k
    assert outside["bad_lines"] == 0 and outside["points"] == len(points)


def test_replay_refuses_a_bundle_without_cascade(
    trained_bundle, small_outcomes, tmp_path, capsys
) -> None:
    code = main(
        [
            "replay",
            "--bundle",
            str(trained_bundle),
            "--outcomes",
            str(small_outcomes),
            "--out",
            str(tmp_path / "r.jsonl"),
        ]
    )
    assert code == 2
    assert "no cascade" in capsys.readouterr().err


def test_evaluate_prints_the_system_beside_routing(cascade_train, answers_slice, capsys) -> None:
    assert (
        main(
            [
                "evaluate",
                "--bundle",
                str(cascade_train.bundle),
                "--outcomes",
                str(answers_slice),
                "--bootstrap",
                "0",
                "--json",
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["system"]["points"] >= 20
    assert rep["system"]["policy"]["calls_per_request"] >= 1.0
    assert set(rep["system"]) >= {"pgr_auc", "cost_at_top", "cost_at_mid", "best_q"}


def test_a_tampered_verifier_is_refused(cascade_train, tmp_path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(cascade_train.bundle, copy)
    data = bytearray((copy / VERIFIER_MODEL).read_bytes())
    data[-20] ^= 0xFF
    (copy / VERIFIER_MODEL).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"verifier\.onnx"):
        Router.load(copy)


def test_policy_refits_the_cascade_as_train_fitted_it(cascade_train, tmp_path) -> None:
    """`tier-router policy` refits cascade.json from the bundle's cascade_data.npz: to
    another goal and back gives the very policy `train` fitted."""
    from router.cascade import CascadeFile

    original = CascadeFile.from_json((cascade_train.bundle / "cascade.json").read_text())
    goal = original.goal
    other, back = tmp_path / "mid", tmp_path / "back"
    assert (
        main(
            ["policy", "--bundle", str(cascade_train.bundle), "--goal", "mid", "--out", str(other)]
        )
        == 0
    )
    moved = CascadeFile.from_json((other / "cascade.json").read_text())
    assert moved.goal == "mid" and moved.policy != original.policy
    assert (
        moved.policy.expected["validation_cost_vs_top"]
        < original.policy.expected["validation_cost_vs_top"]
    )
    assert main(["policy", "--bundle", str(other), "--goal", goal, "--out", str(back)]) == 0
    again = CascadeFile.from_json((back / "cascade.json").read_text())
    assert again.policy == original.policy
    assert Router.load(back).cascade.policy == original.policy
