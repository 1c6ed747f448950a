"""The bundle's soft-cluster predictor evaluated with numpy, for one request at a time.

model.onnx stays the model: batches, MLflow and other languages run it with ONNX
Runtime. For a single prompt, though, each ONNX Runtime node costs several
microseconds, more than the whole computation, so `Router.route` evaluates the same
graph here from the same weights, read out of model.onnx. Router.load checks that
both give the same P(pass) before using this path.

The graph (training/model.py) is: logits = x @ centroids + bias, a softmax within each
centroid set (padding columns carry bias -1e9), then @ rates. Here the padding is
dropped and the per-set softmax is exp(logits) summed per set: x is a unit vector, so
|logit| is at most the norm of a weight column (1 / temperature for centroids, at most 30
for the category head) and exp needs no max-subtraction as long as that bound stays
small (checked at load). A column's bias b (0 for clusters; a logistic unit's intercept,
training/candidates.py) folds into its rates and denominator as exp(b), which is exact:
exp(x.w + b) = exp(x.w) * exp(b).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from router.onnx_initializers import OnnxFormatError, read_initializers

CENTROIDS, BIAS, RATES, SET_SHAPE = "centroids", "centroid_bias", "rates", "set_shape"
MAX_LOGIT = 40.0  # exp(+-40) and sums of 256 of them stay well inside float32


class ClusterPredictor:
    def __init__(self, centroids: np.ndarray, bias: np.ndarray, rates: np.ndarray, sets: int):
        keep = bias > -1e8
        per_set = keep.reshape(sets, -1).sum(axis=1)
        self._w = np.ascontiguousarray(centroids[:, keep], dtype=np.float32)
        scale = np.exp(bias[keep].astype(np.float64))[:, None]
        set_rates = rates[keep] * scale  # each set's share is already in its rates
        self.sets = sets
        self.tiers = rates.shape[1]
        # One product gives each set's weighted rates and its softmax denominator.
        q = np.zeros((self._w.shape[1], sets * self.tiers + sets), dtype=np.float32)
        start = 0
        for s, n in enumerate(per_set):
            q[start : start + n, s * self.tiers : (s + 1) * self.tiers] = set_rates[
                start : start + n
            ]
            q[start : start + n, sets * self.tiers + s] = scale[start : start + n, 0]
            start += n
        self._q = q
        self._den = sets * self.tiers

    @property
    def centroids(self) -> np.ndarray:
        """(dims, K) float32: the graph's centroids without padding columns."""
        return self._w

    @property
    def set_rates(self) -> np.ndarray:
        """(K, sets * tiers + sets) float32: per set, the weighted rates, then a column
        that gives the softmax denominator (exp(bias): ones for clusters), all times exp(bias)."""
        return self._q

    @classmethod
    def from_onnx(cls, path: Path) -> ClusterPredictor | None:
        """None when the model is not the graph this evaluates (ONNX Runtime is used)."""
        try:
            w = read_initializers(path, (CENTROIDS, BIAS, RATES, SET_SHAPE))
        except (OnnxFormatError, ValueError, OSError):  # malformed: leave it to ONNX Runtime
            return None
        if set(w) != {CENTROIDS, BIAS, RATES, SET_SHAPE}:
            return None
        cen, bias, rates, shape = w[CENTROIDS], w[BIAS], w[RATES], w[SET_SHAPE]
        if (
            cen.ndim != 2
            or rates.ndim != 2
            or shape.shape != (3,)
            or bias.shape != (cen.shape[1],)
            or rates.shape[:1] != (cen.shape[1],)
            or int(shape[1]) * int(shape[2]) != cen.shape[1]
            or float(np.linalg.norm(cen, axis=0).max()) > MAX_LOGIT
            or float(np.abs(np.where(bias > -1e8, bias, 0.0)).max(initial=0.0)) > MAX_LOGIT
        ):
            return None
        return cls(cen, bias, rates, int(shape[1]))

    def probe_inputs(self) -> np.ndarray:
        """Unit vectors at some centroids (peaked memberships) and at random (diffuse),
        to compare this evaluation with ONNX Runtime's at load."""
        cols = self._w[:, np.linalg.norm(self._w, axis=0) > 0]  # a logistic set's 0 column
        at_centroids = cols[:, :: max(1, cols.shape[1] // 6)].T
        rand = np.random.default_rng(0).normal(size=(2, self._w.shape[0]))
        x = np.vstack([at_centroids, -at_centroids[:1], rand]).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def p_pass(self, x: np.ndarray) -> list[float]:
        """P(pass) per tier for one unit-norm joint vector."""
        nd = (np.exp(x @ self._w) @ self._q).tolist()
        t, den = self.tiers, self._den
        return [sum(nd[s * t + i] / nd[den + s] for s in range(self.sets)) for i in range(t)]
