"""The routing model's math, defined once: P(pass) as a sum of softmax sets.

    P(pass | x) = sum over sets g of softmax(x @ W_g + b_g) @ R_g

x is the unit-norm joint vector (router/joint_space.py). Every model family `train`
fits is this form: soft clusters (a set per granularity, W = centroids / temperature,
b = 0), the category head (one set, a logistic regression without intercept), a per-tier
logistic regression (a two-column set per tier: softmax([z, 0])[0] = sigmoid(z)) and
blends of them (each set's share folded into its rates).

`SoftmaxSets` holds the padded matrix form, the same four arrays the bundle stores
(model_weights.npz) and the ONNX graph is generated from (training/onnx_graph.py): W as
one (dims, sets * width) matrix, padding columns with bias PAD so they get no weight.
`predict` is the definition, for batches and training; `p_pass_one` evaluates the same
sum for one request, where a numpy call costs more than its arithmetic. Tests hold both,
and ONNX Runtime on the generated graph, to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PAD = -1e9  # bias of a padding column: no softmax weight
# p_pass_one takes exp(logit) without subtracting the maximum, which is exact while every
# |logit| is small: x is a unit vector, so |logit| <= |column| + |bias|. Training keeps
# both under MAX_LOGIT (exp(+-80) and sums of hundreds of them stay inside float32).
MAX_LOGIT = 40.0


@dataclass(frozen=True)
class SoftmaxSet:
    """One set before padding: a logit row per column, its bias, its rates."""

    weights: np.ndarray  # (k, dims)
    bias: np.ndarray  # (k,)
    rates: np.ndarray  # (k, tiers): P(pass) per column, the set's share included


@dataclass(frozen=True, eq=False)
class SoftmaxSets:
    weights: np.ndarray  # (dims, sets * width) float32
    bias: np.ndarray  # (sets * width,) float32; PAD on padding columns
    rates: np.ndarray  # (sets * width, tiers) float32
    sets: int
    # Derived for p_pass_one: padding dropped, each column's exp(bias) folded into a
    # table whose product gives every set's weighted rates and its softmax denominator.
    _w: np.ndarray = field(init=False, repr=False)
    _q: np.ndarray | None = field(init=False, repr=False)  # None: out of the logit bound
    _out_of_bounds: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w, b, r, g = self.weights, self.bias, self.rates, self.sets
        if w.ndim != 2 or b.ndim != 1 or r.ndim != 2 or not isinstance(g, int) or g < 1:
            raise ValueError("softmax sets need weights (dims, K), bias (K,), rates (K, tiers)")
        if b.shape[0] != w.shape[1] or r.shape[0] != w.shape[1] or w.shape[1] % g:
            raise ValueError(
                f"softmax sets: weights {w.shape}, bias {b.shape} and rates {r.shape} do not "
                f"fit {g} sets of equal width"
            )
        if not (np.isfinite(w).all() and np.isfinite(b).all() and np.isfinite(r).all()):
            raise ValueError("softmax sets: weights, bias and rates must be finite")
        for name in ("weights", "bias", "rates"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), np.float32))
        keep = self.bias > PAD / 2
        object.__setattr__(self, "_w", np.ascontiguousarray(self.weights[:, keep]))
        out = self._bound_exceeded(keep)
        object.__setattr__(self, "_out_of_bounds", out)
        object.__setattr__(self, "_q", self._fold(keep) if out is None else None)

    @property
    def width(self) -> int:
        """Columns per set, padding included."""
        return self.weights.shape[1] // self.sets

    @property
    def dims(self) -> int:
        return int(self.weights.shape[0])

    @property
    def tiers(self) -> int:
        return int(self.rates.shape[1])

    @classmethod
    def from_sets(cls, sets: Sequence[SoftmaxSet]) -> SoftmaxSets:
        """Pad each set to the widest and lay them side by side."""
        if not sets:
            raise ValueError("a model needs at least one softmax set")
        g, k = len(sets), max(len(s.weights) for s in sets)
        dims, tiers = sets[0].weights.shape[1], sets[0].rates.shape[1]
        weights = np.zeros((dims, g * k), dtype=np.float32)
        bias = np.full(g * k, PAD, dtype=np.float32)
        rates = np.zeros((g * k, tiers), dtype=np.float32)
        for i, s in enumerate(sets):
            n = len(s.weights)
            weights[:, i * k : i * k + n] = s.weights.T
            bias[i * k : i * k + n] = s.bias
            rates[i * k : i * k + n] = s.rates
        return cls(weights, bias, rates, g)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, tiers) float32 P(pass) from (n, dims) joint vectors: the definition."""
        logits = np.asarray(x, dtype=np.float64) @ self.weights + self.bias
        z = logits.reshape(len(logits), self.sets, self.width)
        z -= z.max(axis=2, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=2, keepdims=True)
        return (z.reshape(len(logits), -1) @ self.rates).astype(np.float32)

    def p_pass_one(self, x: np.ndarray) -> list[float]:
        """`predict` for one unit-norm joint vector, in two numpy calls. (A C version of
        these saved 2 of 7 us: numpy's exp is vectorised, a C loop's expf is not.)"""
        if self._q is None:  # logits too large to skip the max: the definition itself
            p: list[float] = self.predict(x[None, :])[0].tolist()
            return p
        nd = (np.exp(x @ self._w) @ self._q).tolist()
        t, g = self.tiers, self.sets
        return [sum(nd[s * t + i] / nd[g * t + s] for s in range(g)) for i in range(t)]

    def check_bounds(self) -> None:
        """Refuse weights whose logits could leave the range p_pass_one evaluates fast
        and exactly (training keeps every model inside it)."""
        if self._out_of_bounds is not None:
            raise ValueError(self._out_of_bounds)

    def _bound_exceeded(self, keep: np.ndarray) -> str | None:
        if float(np.linalg.norm(self._w, axis=0).max(initial=0.0)) > MAX_LOGIT:
            return "a weight row exceeds the runtime's logit bound"
        if float(np.abs(self.bias[keep]).max(initial=0.0)) > MAX_LOGIT:
            return "a bias exceeds the runtime's logit bound"
        return None

    def _fold(self, keep: np.ndarray) -> np.ndarray:
        """(K', sets * tiers + sets): exp(bias) * rates per set, then exp(bias) alone in
        the set's denominator column, since exp(x.w + b) = exp(x.w) * exp(b)."""
        scale = np.exp(self.bias[keep].astype(np.float64))
        set_of = np.repeat(np.arange(self.sets), self.width)[keep]
        t, g = self.tiers, self.sets
        q = np.zeros((len(scale), g * t + g), dtype=np.float64)
        for s in range(g):
            rows = set_of == s
            q[rows, s * t : (s + 1) * t] = self.rates[keep][rows] * scale[rows, None]
            q[rows, g * t + s] = scale[rows]
        return q.astype(np.float32)

    def probe_inputs(self) -> np.ndarray:
        """Unit vectors at some columns (peaked memberships) and at random (diffuse):
        where a reader of the bundle compares its evaluation with ONNX Runtime's."""
        cols = self._w[:, np.linalg.norm(self._w, axis=0) > 0].T
        picked = cols[:: max(1, len(cols) // 6)]
        rand = np.random.default_rng(0).normal(size=(2, self.dims))
        x = np.vstack([picked, -picked[:1], rand]).astype(np.float64)
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        """What the bundle stores (router.bundle.write_arrays)."""
        return {
            "weights": self.weights,
            "bias": self.bias,
            "rates": self.rates,
            "sets": np.array([self.sets], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> SoftmaxSets:
        sets = a["sets"]
        if sets.shape != (1,) or sets.dtype.kind not in "iu" or not 1 <= int(sets[0]) < 2**20:
            raise ValueError("model weights: 'sets' must be one positive integer")
        return cls(a["weights"], a["bias"], a["rates"], int(sets[0]))
