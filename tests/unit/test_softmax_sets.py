"""router/softmax_sets.py, the one definition of the model's math: its single-request
evaluation and the ONNX graph generated from it give its numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from router.bundle import read_arrays, write_arrays
from router.softmax_sets import MAX_LOGIT, PAD, SoftmaxSet, SoftmaxSets
from training.onnx_graph import export_model

DIMS, TIERS = 12, 3
RNG = np.random.default_rng(0)


def _set(k: int, scale: float, with_bias: bool) -> SoftmaxSet:
    w = RNG.normal(size=(k, DIMS)).astype(np.float32)
    w *= scale / np.linalg.norm(w, axis=1, keepdims=True)
    bias = RNG.normal(size=k).astype(np.float32) * 3 if with_bias else np.zeros(k, np.float32)
    rates = (RNG.uniform(size=(k, TIERS)) / 3).astype(np.float32)
    return SoftmaxSet(w, bias, rates)


def _model(scale: float = 20.0) -> SoftmaxSets:
    # Sets of different widths (padding), with and without bias, and a logistic-like pair.
    logistic = SoftmaxSet(
        np.vstack([RNG.normal(size=DIMS), np.zeros(DIMS)]).astype(np.float32),
        np.array([1.5, 0.0], np.float32),
        np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32) / 3,
    )
    return SoftmaxSets.from_sets([_set(7, scale, False), _set(3, scale, True), logistic])


def _unit(n: int) -> np.ndarray:
    x = RNG.normal(size=(n, DIMS))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_padding_columns_carry_no_weight_and_rows_sum_as_the_rates() -> None:
    m = _model()
    assert (m.sets, m.width, m.dims, m.tiers) == (3, 7, DIMS, TIERS)
    assert (m.bias == PAD).sum() == (7 - 3) + (7 - 2)
    # With every rate 1 each set's softmax sums to 1: P = number of sets.
    ones = SoftmaxSets(m.weights, m.bias, np.ones_like(m.rates), m.sets)
    np.testing.assert_allclose(ones.predict(_unit(5)), 3.0, rtol=1e-6)


def test_the_single_request_evaluation_equals_the_definition() -> None:
    m, x = _model(), _unit(64)
    single = np.array([m.p_pass_one(v) for v in x])
    np.testing.assert_allclose(single, m.predict(x), atol=1e-6)


def test_logits_past_the_bound_fall_back_to_the_definition() -> None:
    m, x = _model(scale=3 * MAX_LOGIT), _unit(16)
    assert m._q is None
    np.testing.assert_allclose([m.p_pass_one(v) for v in x], m.predict(x), atol=1e-7)
    with pytest.raises(ValueError, match="logit bound"):
        SoftmaxSets.from_sets([_set(2, 3 * MAX_LOGIT, False)]).check_bounds()
    _model().check_bounds()  # inside the bound: no error


def test_the_generated_graph_and_the_saved_arrays_give_the_definition(tmp_path: Path) -> None:
    m, x = _model(), _unit(32)
    export_model(m, tmp_path, "test")
    got = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"features": x})[0]
    np.testing.assert_allclose(got, m.predict(x), atol=1e-6)
    back = SoftmaxSets.from_arrays(
        read_arrays(tmp_path / "model_weights.npz", ("weights", "bias", "rates", "sets"))
    )
    for name in ("weights", "bias", "rates"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    assert back.sets == m.sets


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bias": np.zeros(5, np.float32)}, "equal width"),
        ({"rates": np.full((21, TIERS), np.nan, np.float32)}, "finite"),
        ({"sets": 0}, "need weights"),
    ],
)
def test_inconsistent_arrays_are_refused(change: dict[str, object], message: str) -> None:
    m = _model()
    fields = {"weights": m.weights, "bias": m.bias, "rates": m.rates, "sets": m.sets}
    with pytest.raises(ValueError, match=message):
        SoftmaxSets(**{**fields, **change})  # type: ignore[arg-type]


def test_read_arrays_refuses_other_names_types_and_pickles(tmp_path: Path) -> None:
    p = tmp_path / "a.npz"
    write_arrays(p, {"weights": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="holds arrays"):
        read_arrays(p, ("weights", "bias"))
    write_arrays(p, {"weights": np.ones(3, np.float64)})
    with pytest.raises(ValueError, match="float64"):
        read_arrays(p, ("weights",))
    np.savez(p, weights=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        read_arrays(p, ("weights",))
