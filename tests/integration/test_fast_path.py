"""route()'s single-request path: the batch path's numbers (ONNX Runtime on model.onnx) on
real prompts, with or without the compiled kernels, and a bundle whose arrays and graph
disagree is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from compiled_kernels import require_compiled
from onnx import numpy_helper

from outcomes import read_outcomes
from router import BundleError, Router
from router.bundle import (
    MODEL_FILE,
    MODEL_WEIGHTS,
    Manifest,
    read_arrays,
    write_arrays,
    write_manifest,
)
from router.static_embedder import StaticEmbedder

REPO = Path(__file__).resolve().parents[2]
# Prompts that exercise every feature: empty, whitespace only, code, math, choices,
# non-ASCII, control characters and a long few-shot-like text.
PROBES = (
    "",
    " \n\t ",
    "What is the capital of France?",
    "def add(a, b):\n    return a + b  # why does this fail for lists? [1] == {x}",
    "Solve for x: 3x^2 + 2x - 5 = 0, then compute 15% of $x / 2.",
    "Which is correct?\nA) 12\nB) 14\nC) 16\nD) 18\n(A) first (B) second",
    "naïve café Ünïcödé 東京 emoji \U0001f600 \x00\x07 control \ud800 surrogate",
    "Q: 2+2? A: 4.\n" * 300 + "Q: what is the derivative of x^3?",
    "x" * 50_000,
)


@pytest.fixture(scope="module")
def prompts(small_outcomes: Path) -> list[str]:
    return [x.prompt for x in read_outcomes(small_outcomes, "test")][:100] + list(PROBES)


def _single_vs_batch(r: Router, prompts: list[str]) -> float:
    batch = r.p_pass_batch(prompts)
    single = np.array([list(r.route(p).p_pass.values()) for p in prompts])
    return float(np.abs(single - batch).max())


def _edited(bundle: Path, tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    """A copy of the bundle with one file edited and the manifest re-hashed."""
    out = tmp_path / "edited"
    shutil.copytree(bundle, out)
    edit(out)
    m = Manifest.read(out)
    write_manifest(out, m.router_version, m.info)
    return out


def test_single_route_equals_onnx_runtime_on_real_prompts(
    trained_bundle: Path, prompts: list[str]
) -> None:
    r = Router.load(trained_bundle)
    assert len(r.space.center) == r.featurizer.dims  # trained centred (the default)
    report = json.loads((trained_bundle / "train_report.json").read_text())
    if report["model_selection"]["selected"] != "logistic":  # the head is a soft-cluster part
        assert len(report["task_head_classes"]) >= 2  # with the category head (the default)
    for _ in range(2):  # the second pass finds every chunk cached
        assert _single_vs_batch(r, prompts) < 1e-5


def test_an_uncentred_bundle_agrees_on_both_paths_too(
    small_outcomes: Path, small_ladder: Path, tmp_path: Path, prompts: list[str]
) -> None:
    from training.model import ModelConfig
    from training.pipeline import TrainConfig, train

    cfg = TrainConfig(
        outcomes=small_outcomes,
        tiers=small_ladder,
        out=tmp_path / "uncentred",
        model=ModelConfig(n_clusters=(8,), center=False),
        folds=2,
        goal="mid",
    )
    r = Router.load(train(cfg).bundle)
    assert r.space.center == ()
    assert _single_vs_batch(r, prompts) < 1e-5


def test_weights_that_disagree_with_the_graph_are_refused(
    trained_bundle: Path, tmp_path: Path
) -> None:
    def sharpen(out: Path) -> None:
        # The graph now scales logits by 2 before the softmax; the arrays do not say so.
        model = onnx.load(str(out / MODEL_FILE))
        softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
        scaled = softmax.input[0] + "_x2"
        model.graph.initializer.append(
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
        )
        idx = list(model.graph.node).index(softmax)
        model.graph.node.insert(
            idx, onnx.helper.make_node("Mul", [softmax.input[0], "two"], [scaled])
        )
        softmax.input[0] = scaled
        onnx.save(model, str(out / MODEL_FILE))

    def other_rates(out: Path) -> None:
        a = read_arrays(out / MODEL_WEIGHTS, ("weights", "bias", "rates", "sets"))
        write_arrays(out / MODEL_WEIGHTS, {**a, "rates": a["rates"][:, ::-1].copy()})

    for edit in (sharpen, other_rates):
        with pytest.raises(BundleError, match="integrity check failed"):
            Router.load(_edited(trained_bundle, tmp_path / edit.__name__, edit))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"weights": np.ones((3, 4), np.float32)}, "holds arrays"),
        ("not a zip", "unreadable arrays"),
        (
            {
                "weights": np.ones((3, 4), np.float32),
                "bias": np.ones(4, np.float32),
                "rates": np.ones((4, 2), np.float32),
                "sets": np.array([3]),
            },
            "equal width",
        ),
    ],
)
def test_malformed_model_weights_are_a_clear_bundle_error(
    trained_bundle: Path, tmp_path: Path, arrays: object, message: str
) -> None:
    def replace(out: Path) -> None:
        if isinstance(arrays, dict):
            write_arrays(out / MODEL_WEIGHTS, arrays)
        else:
            (out / MODEL_WEIGHTS).write_text(str(arrays))

    with pytest.raises(BundleError, match=message):
        Router.load(_edited(trained_bundle, tmp_path, replace))


def test_concurrent_routes_equal_sequential_ones(trained_bundle: Path, prompts: list[str]) -> None:
    shared = Router.load(trained_bundle)  # a cold cache filled by 8 threads at once
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: shared.route(t).p_pass, prompts * 2))
    ref = Router.load(trained_bundle)
    for g, text in zip(got, prompts * 2, strict=True):
        assert g == pytest.approx(ref.route(text).p_pass, abs=1e-6)


def test_a_full_chunk_cache_changes_no_number(trained_bundle: Path, prompts: list[str]) -> None:
    hot = require_compiled()
    r = Router.load(trained_bundle)
    assert r.route_path == "compiled"
    f = r.featurizer
    table = np.load(trained_bundle / "static_table.npy")
    f.embedder = StaticEmbedder(f.tokenizer, table, capacity=8, kernels=hot)  # room for 8 chunks
    ref = Router.load(trained_bundle)
    for text in prompts[:50]:
        # Rows come from the cache or, once it is full, straight from the tokenizer, and
        # are added in text order either way: the same bits.
        assert r.route(text).p_pass == ref.route(text).p_pass
    assert len(f.embedder._rows) == 8  # rows kept
    assert len(f.embedder.index) == 16  # rows and, beyond them, token ids


def test_without_the_kernels_routes_are_the_same(trained_bundle: Path, prompts: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from router import Router\n"
        "r = Router.load(sys.argv[1])\n"
        "assert r.route_path == 'python', r.route_path\n"
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
