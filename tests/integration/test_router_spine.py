"""The trained bundle on real data: ONNX parity, the runtime API and its input handling."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from outcomes import read_outcomes
from router import BundleError, Router
from router.bundle import Manifest, pack_bundle
from training.featurize import featurize


@pytest.fixture(scope="module")
def router(trained_bundle: Path) -> Router:
    return Router.load(trained_bundle)


def test_onnx_matches_sklearn_model_on_real_prompts(trained, small_outcomes: Path) -> None:
    r = Router.load(trained.bundle)
    # The slice names its categories, so the graph includes the category head's set.
    assert len(trained.model.task_classes_) >= 2 and trained.model.shares_[-1] == 0.5
    prompts = [x.prompt for x in read_outcomes(small_outcomes, "test")]
    feats = featurize(prompts, r.featurizer)
    expected = trained.model.predict_proba(feats)
    got = r.p_pass_batch(prompts)
    assert got.shape == (len(prompts), 3)
    assert np.abs(got - expected).max() < 1e-5
    single = np.array([list(r.route(p).p_pass.values()) for p in prompts[:50]])
    assert np.abs(single - expected[:50]).max() < 1e-5


def test_bundle_layout_and_manifest(trained_bundle: Path) -> None:
    m = Manifest.read(trained_bundle)
    files = set(m.files)
    assert {
        "model.onnx",
        "ladder.toml",
        "policy.json",
        "featurizer.json",
        "static_tokenizer.json",
        "static_table.npy",
        "joint_space.json",
        "train_report.json",
    } <= files
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in trained_bundle.iterdir())
    assert m.info["runtime"]["onnxruntime"]
    import onnx

    model = onnx.load(str(trained_bundle / "model.onnx"))
    assert model.opset_import[0].version == 17
    assert [o.name for o in model.graph.output] == ["p_pass"]


def test_decision_fields_and_batch_agree(router: Router) -> None:
    prompts = [
        "What is 2+2?",
        "Prove that there are infinitely many primes.",
        "Write a Python function that merges two sorted lists.",
    ]
    batch = router.route_batch(prompts)
    for p, d in zip(prompts, batch, strict=True):
        one = router.route(p)
        assert one.tier == d.tier and one.tier in router.ladder.names
        assert one.model_id == router.ladder.tiers[one.tier_index].model_id
        assert one.max_tokens == router.ladder.tiers[one.tier_index].max_tokens
        assert list(one.p_pass) == router.ladder.names
        assert all(0.0 <= v <= 1.0 for v in one.p_pass.values())
        assert abs(one.p_pass["haiku"] - d.p_pass["haiku"]) < 1e-6
        assert one.router_version == router.version
    assert router.route_batch([]) == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\x00\x01\x02\x1b[31m",
        "\ud800\udc00\ud800",
        "x" * 1_000_000,
        "🤖" * 10_000,
        "a\u0301" * 1000,
        "\n" * 100_000,
    ],
)
def test_any_string_gets_a_valid_tier(router: Router, text: str) -> None:
    d = router.route(text)
    assert d.tier in router.ladder.names
    assert all(np.isfinite(v) and 0 <= v <= 1 for v in d.p_pass.values())


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["a list"], {"text": "x"}])
def test_non_strings_raise_type_error(router: Router, bad: object) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        router.route(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[0\] must be a str"):
        router.route_batch([bad])  # type: ignore[list-item]


def test_route_batch_rejects_a_bare_string(router: Router) -> None:
    with pytest.raises(TypeError, match="use route"):
        router.route_batch("one prompt")


def test_tampered_bundle_is_refused(trained_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(trained_bundle, copy)
    policy = json.loads((copy / "policy.json").read_text())
    policy["thresholds"] = [0.0 for _ in policy["thresholds"]]
    (copy / "policy.json").write_text(json.dumps(policy))
    with pytest.raises(BundleError, match="integrity"):
        Router.load(copy)


def test_archive_bundle_loads(trained_bundle: Path, tmp_path: Path, router: Router) -> None:
    arc = pack_bundle(trained_bundle, tmp_path / "bundle.tar.gz")
    r2 = Router.load(arc)
    assert r2.version == router.version
    assert r2.route("hello").p_pass == router.route("hello").p_pass


def test_runtime_imports_neither_training_nor_serving(trained_bundle: Path) -> None:
    code = (
        "import sys; from router import Router; r = Router.load(sys.argv[1]); r.route('hi'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('training', 'serving', 'sklearn', 'torch', 'mlflow', 'boto3', 'tokenizers')); "
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(trained_bundle)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
