"""The predictor: P(pass) per tier from soft membership in learned prompt clusters.

Prompts are clustered (k-means on the unit-norm embedding at several granularities,
32 to 256 clusters); a prompt's P(pass | tier) is the soft-membership-weighted average
of its clusters' pass rates, each rate shrunk toward the tier's global rate. Averaging
the scales made results stable across data sets and seeds where any single setting
was not. On the public routing data this
beats per-tier logistic regression, MLPs and boosting: eval outcomes are noisy 0/1
draws, and what text predicts well is the family of a prompt, not its single outcome.
Missing tier results are masked out of the rates, never counted as failures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from training.featurize import EPS, Features
from training.onnx_graph import GraphBuilder


@dataclass(frozen=True)
class ModelConfig:
    n_clusters: tuple[int, ...] = (32, 64, 128, 256)
    temperature: float = 0.05
    prior_strengths: tuple[float, ...] = (5.0, 20.0, 60.0)
    dense_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.n_clusters or any(k < 1 for k in self.n_clusters):
            raise ValueError(f"n_clusters must be positive integers, got {self.n_clusters}")
        if not self.prior_strengths or any(a < 0 for a in self.prior_strengths):
            raise ValueError(f"prior strengths must be >= 0, got {self.prior_strengths}")
        if self.temperature <= 0 or self.dense_weight < 0:
            raise ValueError("temperature must be > 0 and dense_weight >= 0")

    def params(self) -> dict[str, object]:
        d = asdict(self)
        d["n_clusters"] = ",".join(map(str, self.n_clusters))
        d["prior_strengths"] = ",".join(map(str, self.prior_strengths))
        return d


def joint_vector(f: Features, dense_weight: float) -> np.ndarray:
    if f.dense is None:
        return f.emb
    x = np.hstack([f.emb, dense_weight * f.dense])
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    return s / s.sum(axis=1, keepdims=True)


class SoftClusterModel:
    """scikit-learn style: fit(features, labels) then predict_proba(features)."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.centroids_: list[np.ndarray] = []
        self.rates_: list[np.ndarray] = []
        self.prior_: np.ndarray | None = None

    def fit(self, f: Features, y: np.ndarray, w: np.ndarray | None = None) -> SoftClusterModel:
        """y: (n, tiers) pass labels in [0, 1]; NaN = unknown (masked); w: label weights."""
        from sklearn.cluster import MiniBatchKMeans

        c = self.config
        x = joint_vector(f, c.dense_weight)
        known = ~np.isnan(y)
        wt = np.ones_like(y) if w is None else np.where(known, w, 0.0)
        known_w = known * wt  # a label counts with its (inverse-propensity) weight
        y0 = np.where(known, y, 0.0) * wt
        counts = known_w.sum(axis=0)
        self.prior_ = np.where(counts > 0, y0.sum(axis=0) / np.maximum(counts, 1e-12), 0.5)
        self.centroids_, self.rates_ = [], []
        for k in c.n_clusters:
            k_eff = max(1, min(k, len(x) // 5))
            km = MiniBatchKMeans(
                n_clusters=k_eff, random_state=c.seed, n_init=2, batch_size=2048
            ).fit(x)
            cen = km.cluster_centers_
            cen = (cen / np.maximum(np.linalg.norm(cen, axis=1, keepdims=True), EPS)).astype(
                np.float32
            )
            member = self._membership(x, cen)
            hits, seen = member.T @ y0, member.T @ known_w
            # Averaging over several shrinkage strengths is robust to cluster size and
            # free at run time (the average folds into one rate table).
            rates = np.mean(
                [(hits + a * self.prior_) / (seen + a) for a in c.prior_strengths], axis=0
            )
            self.centroids_.append(cen)
            self.rates_.append(rates.astype(np.float32))
        return self

    def _membership(self, x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        return _softmax_rows((x @ centroids.T) / self.config.temperature)

    def predict_proba(self, f: Features) -> np.ndarray:
        if not self.centroids_:
            raise RuntimeError("model is not fitted")
        x = joint_vector(f, self.config.dense_weight).astype(np.float32)
        parts = [
            self._membership(x, c) @ r for c, r in zip(self.centroids_, self.rates_, strict=True)
        ]
        return np.clip(np.mean(parts, axis=0), 0.0, 1.0).astype(np.float32)

    def add_to_graph(self, b: GraphBuilder, emb: str, dense: str | None) -> str:
        """One MatMul against all centroid sets, one Softmax over a [B, sets, K] view.

        Sets with fewer centroids are padded with zero centroids whose logit is pushed
        to -1e9, so they get no weight; averaging the sets is folded into the rates.
        """
        c = self.config
        x = emb
        if dense is not None:
            scaled = b.op("Mul", [dense, b.const(np.array(c.dense_weight, dtype=np.float32))])
            x = b.op("LpNormalization", [b.op("Concat", [emb, scaled], axis=1)], axis=1, p=2)
        g = len(self.centroids_)
        k = max(len(cen) for cen in self.centroids_)
        dims = self.centroids_[0].shape[1]
        weights = np.zeros((dims, g * k), dtype=np.float32)
        bias = np.full(g * k, -1e9, dtype=np.float32)
        rates = np.zeros((g * k, self.rates_[0].shape[1]), dtype=np.float32)
        for i, (cen, r) in enumerate(zip(self.centroids_, self.rates_, strict=True)):
            weights[:, i * k : i * k + len(cen)] = cen.T / c.temperature
            bias[i * k : i * k + len(cen)] = 0.0
            rates[i * k : i * k + len(cen)] = r / g
        logits = b.op("Add", [b.op("MatMul", [x, b.const(weights, "centroids")]), b.const(bias)])
        grouped = b.op("Reshape", [logits, b.const(np.array([0, g, k], dtype=np.int64))])
        w = b.op("Softmax", [grouped], axis=-1)
        flat = b.op("Reshape", [w, b.const(np.array([0, g * k], dtype=np.int64))])
        return b.op("MatMul", [flat, b.const(rates, "rates")])
