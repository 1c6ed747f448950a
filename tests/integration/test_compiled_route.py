"""route()'s compiled scoring: the Python path's numbers on real prompts, or not used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from compiled_kernels import require_compiled

from outcomes import read_outcomes
from router import Router
from router.compiled_route import PROBES, CompiledRoute
from router.static_embedder import StaticEmbedder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prompts(small_outcomes: Path) -> list[str]:
    return [x.prompt for x in read_outcomes(small_outcomes, "test")] + list(PROBES)


def test_route_uses_the_compiled_scoring_and_matches_the_python_path(
    trained_bundle: Path, prompts: list[str]
) -> None:
    require_compiled()
    r = Router.load(trained_bundle)
    assert r.route_path == "compiled"
    assert r._compiled is not None
    assert len(r.space.center) == r.featurizer.dims  # trained centred (the default)
    report = json.loads((trained_bundle / "train_report.json").read_text())
    if report["model_selection"]["selected"] != "logistic":  # the head is a soft-cluster part
        assert len(report["task_head_classes"]) >= 2  # with the category head (the default)
    f = r.featurizer
    diffs = []
    for text in prompts:
        _, stats = f.embedding(text)
        assert r._compiled.features(text) == f.hand(text, stats)  # same definitions, exactly
        diffs.append(np.abs(np.array(r._compiled.p_pass(text)) - r._p_python(text)).max())
    assert max(diffs) < 1e-5
    batch = r.p_pass_batch(prompts)  # ONNX Runtime on model.onnx
    single = np.array([list(r.route(t).p_pass.values()) for t in prompts])
    assert np.abs(single - batch).max() < 1e-5


def test_an_uncentred_bundle_agrees_on_both_paths_too(
    small_outcomes: Path, small_ladder: Path, tmp_path: Path, prompts: list[str]
) -> None:
    from training.model import ModelConfig
    from training.pipeline import TrainConfig, train

    require_compiled()
    cfg = TrainConfig(
        outcomes=small_outcomes,
        tiers=small_ladder,
        out=tmp_path / "uncentred",
        model=ModelConfig(n_clusters=(8,), center=False),
        folds=2,
        goal="mid",
    )
    r = Router.load(train(cfg).bundle)
    assert r.route_path == "compiled" and r.space.center == ()
    assert r._compiled is not None
    diffs = [np.abs(np.array(r._compiled.p_pass(t)) - r._p_python(t)).max() for t in prompts]
    assert max(diffs) < 1e-5


def test_concurrent_routes_equal_sequential_ones(trained_bundle: Path, prompts: list[str]) -> None:
    require_compiled()
    shared = Router.load(trained_bundle)  # a cold cache filled by 8 threads at once
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: shared.route(t).p_pass, prompts * 2))
    ref = Router.load(trained_bundle)
    for g, text in zip(got, prompts * 2, strict=True):
        assert g == pytest.approx(ref.route(text).p_pass, abs=1e-6)


def test_a_full_chunk_cache_changes_no_number(trained_bundle: Path, prompts: list[str]) -> None:
    hot = require_compiled()
    r = Router.load(trained_bundle)
    f = r.featurizer
    table = np.load(trained_bundle / "static_table.npy")
    f.embedder = StaticEmbedder(f.tokenizer, table, capacity=8, kernels=hot)  # room for 8 chunks
    compiled = CompiledRoute.build(f, r.space, r._fast, hot)
    assert compiled is not None
    ref = Router.load(trained_bundle)
    for text in prompts[:50]:
        # Rows come from the cache or, once it is full, straight from the tokenizer, and
        # are added in text order either way: the same bits.
        assert compiled.p_pass(text) == ref._compiled.p_pass(text)
    assert len(f.embedder._rows) == 8  # rows kept
    assert len(f.embedder.index) == 16  # rows and, beyond them, token ids


def test_a_compiled_path_that_disagrees_is_dropped_with_a_warning(
    trained_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_compiled()
    monkeypatch.setattr(CompiledRoute, "p_pass", lambda self, text: [0.0, 0.0, 0.0])
    with pytest.warns(RuntimeWarning, match="differs from the Python path"):
        r = Router.load(trained_bundle)
    assert r.route_path == "numpy"
    assert r.route("What is 2 + 2?").tier in r.ladder.names


def test_without_the_kernels_routes_are_the_same(trained_bundle: Path, prompts: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from router import Router\n"
        "r = Router.load(sys.argv[1])\n"
        "assert r.route_path == 'numpy', r.route_path\n"
        "texts = json.load(sys.stdin)\n"
        "print(json.dumps([r.route(t).p_pass for t in texts]))\n"
    )
    texts = [t for t in prompts[:40] if "\ud800" not in t]  # JSON cannot carry a lone surrogate
    env = {**os.environ, "TIER_ROUTER_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(trained_bundle)],
        input=json.dumps(texts),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    r = Router.load(trained_bundle)
    for g, text in zip(got, texts, strict=True):
        assert g == pytest.approx(r.route(text).p_pass, abs=1e-5)
