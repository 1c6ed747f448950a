"""route()'s numpy evaluation of model.onnx: same numbers as ONNX Runtime, or not used."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from outcomes import read_outcomes
from router import BundleError, Router
from router.bundle import Manifest, write_manifest
from router.cluster_predictor import BIAS, CENTROIDS, RATES, SET_SHAPE
from router.onnx_initializers import OnnxFormatError, read_initializers

PROMPTS = ["", "What is 2 + 2?", "def f(x):\n    return x ** 2", "x" * 50_000]


def _rewrite(bundle: Path, tmp_path: Path, edit) -> Path:
    """A copy of the bundle with model.onnx edited and the manifest re-hashed."""
    out = tmp_path / "edited"
    shutil.copytree(bundle, out)
    model = onnx.load(str(out / "model.onnx"))
    edit(model)
    onnx.save(model, str(out / "model.onnx"))
    m = Manifest.read(out)
    write_manifest(out, m.router_version, m.info)
    return out


def test_initializers_read_without_onnx_match_onnx(trained_bundle: Path) -> None:
    model = onnx.load(str(trained_bundle / "model.onnx"))
    expected = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    names = (CENTROIDS, BIAS, RATES, SET_SHAPE)
    got = read_initializers(trained_bundle / "model.onnx", names)
    assert set(got) == set(names)
    for name in names:
        assert got[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(got[name], expected[name])


def test_truncated_model_file_is_a_format_error(trained_bundle: Path, tmp_path: Path) -> None:
    data = (trained_bundle / "model.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxFormatError):
        read_initializers(tmp_path / "cut.onnx", (CENTROIDS,))


def test_single_route_equals_onnx_runtime_on_real_prompts(
    trained_bundle: Path, small_outcomes: Path
) -> None:
    r = Router.load(trained_bundle)
    assert r._fast is not None
    prompts = [x.prompt for x in read_outcomes(small_outcomes, "test")][:100] + PROMPTS
    batch = r.p_pass_batch(prompts)
    for _ in range(2):  # the second pass finds every chunk cached
        single = np.array([list(r.route(p).p_pass.values()) for p in prompts])
        assert np.abs(single - batch).max() < 1e-5


def test_a_graph_the_numpy_path_does_not_know_falls_back_to_onnx_runtime(
    trained_bundle: Path, tmp_path: Path
) -> None:
    def rename(model: onnx.ModelProto) -> None:
        for init in model.graph.initializer:
            if init.name == CENTROIDS:
                init.name = "other_centroids"
        for node in model.graph.node:
            node.input[:] = ["other_centroids" if i == CENTROIDS else i for i in node.input]

    r = Router.load(_rewrite(trained_bundle, tmp_path, rename))
    assert r._fast is None
    ref = Router.load(trained_bundle)
    for p in PROMPTS:
        assert r.route(p).p_pass == pytest.approx(ref.route(p).p_pass, abs=1e-5)


def test_weights_that_disagree_with_the_graph_are_refused(
    trained_bundle: Path, tmp_path: Path
) -> None:
    def sharpen(model: onnx.ModelProto) -> None:
        # The graph now scales logits by 2 before the softmax; the weights alone do not say so.
        softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
        scaled = softmax.input[0] + "_x2"
        two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
        model.graph.initializer.append(two)
        idx = list(model.graph.node).index(softmax)
        model.graph.node.insert(
            idx, onnx.helper.make_node("Mul", [softmax.input[0], "two"], [scaled])
        )
        softmax.input[0] = scaled

    with pytest.raises(BundleError, match="integrity check failed"):
        Router.load(_rewrite(trained_bundle, tmp_path, sharpen))


def test_corrupt_model_bytes_give_a_format_error_or_weights_never_a_crash(
    trained_bundle: Path, tmp_path: Path
) -> None:
    data = (trained_bundle / "model.onnx").read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / "m.onnx"
    for _ in range(300):
        buf = bytearray(data[: int(rng.integers(1, len(data) + 1))])
        for i in rng.integers(0, len(buf), size=int(rng.integers(1, 8))):
            buf[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(buf))
        try:
            got = read_initializers(path, (CENTROIDS, BIAS, RATES, SET_SHAPE))
        except ValueError:  # OnnxFormatError or a bad tensor payload
            continue
        assert all(isinstance(v, np.ndarray) for v in got.values())
