"""The predictor: P(pass) per tier from soft membership in learned prompt clusters.

Prompts are clustered (k-means at several granularities, 32 to 256 clusters) in a
joint space: the unit-norm embedding plus a few standardized hand features (length,
digit/math/code symbol shares, choice options) at a small weight, so prompts of one
family but different shape can fall into different clusters. A prompt's
P(pass | tier) is the soft-membership-weighted average of its clusters' pass rates,
each rate shrunk toward the tier's global rate. Averaging the scales made results
stable across data sets and seeds where any single setting was not. Feeding the hand
features to a logistic stacker instead calibrated better but routed worse (-0.08
pgr_auc on llmrouter_dcrouter). On the public routing data this
beats per-tier logistic regression, MLPs and boosting: eval outcomes are noisy 0/1
draws, and what text predicts well is the family of a prompt, not its single outcome.
Missing tier results are masked out of the rates, never counted as failures.

When the training file names each prompt's benchmark category (`task`), a category head
joins the clusters: a multinomial logistic regression from the same joint vector to the
category, whose P(category | text) weights each category's pass rates. The category is
only a training label; a request still carries text alone. It matters where categories
that read alike differ in pass rates (llmrouter_dcrouter: +0.05 pgr_auc over 3 seeds).
Without an intercept it is one more softmax set in the same graph, so the runtime and
its compiled path are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from router.joint_space import EPS, JointSpace
from router.softmax_sets import SoftmaxSet, SoftmaxSets
from router.text_features import FEATURE_NAMES
from training.featurize import Features

# Chosen on the three public files over three seeds: pgr_auc -0.0003 / +0.0065 / +0.0073
# on mmlu_pro / routerbench_subset / llmrouter_dcrouter against the embedding alone.
HAND_FEATURES = (
    "log_chars",
    "log_tokens",
    "digits_share",
    "math_symbols_share",
    "code_symbols_share",
    "choice_options",
)


@dataclass(frozen=True)
class ModelConfig:
    n_clusters: tuple[int, ...] = (32, 64, 128, 256)
    temperature: float = 0.05
    prior_strengths: tuple[float, ...] = (5.0, 20.0, 60.0)
    dense_weight: float = 1.0
    hand_features: tuple[str, ...] = HAND_FEATURES
    hand_weight: float = 0.2
    center: bool = True  # centre static embeddings on the training mean (router.joint_space)
    # Category head: its share of P(pass) (0 = off), inverse regularisation, and the
    # fewest training prompts a category needs to be a class (smaller ones pool).
    task_weight: float = 0.5
    task_c: float = 10.0
    task_min_rows: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.n_clusters or any(k < 1 for k in self.n_clusters):
            raise ValueError(f"n_clusters must be positive integers, got {self.n_clusters}")
        if not self.prior_strengths or any(a < 0 for a in self.prior_strengths):
            raise ValueError(f"prior strengths must be >= 0, got {self.prior_strengths}")
        if self.temperature <= 0 or self.dense_weight < 0 or self.hand_weight < 0:
            raise ValueError("temperature must be > 0, dense_weight and hand_weight >= 0")
        if not 0.0 <= self.task_weight <= 1.0 or self.task_c <= 0 or self.task_min_rows < 1:
            raise ValueError(
                "task_weight must be in [0, 1], task_c > 0 and task_min_rows >= 1, got "
                f"{self.task_weight}, {self.task_c}, {self.task_min_rows}"
            )
        unknown = [n for n in self.hand_features if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown hand features {unknown}; known: {list(FEATURE_NAMES)}")

    def params(self) -> dict[str, object]:
        d = asdict(self)
        d["n_clusters"] = ",".join(map(str, self.n_clusters))
        d["prior_strengths"] = ",".join(map(str, self.prior_strengths))
        d["hand_features"] = ",".join(self.hand_features)
        return d


# The single-request path evaluates exp(logit) without subtracting the maximum, which is
# exact while every weight column's norm stays under router.softmax_sets.MAX_LOGIT (40).
TASK_MAX_NORM = 30.0
OTHER_TASKS = "(other)"


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    return s / s.sum(axis=1, keepdims=True)


class SoftClusterModel:
    """scikit-learn style: fit(features, labels) then predict_proba(features)."""

    def __init__(self, config: ModelConfig):
        self.config = config
        # Softmax sets: (logit weights, P(pass) per column, share of the output). Cluster
        # sets come first; the category head, when fitted, is the last set.
        self.centroids_: list[np.ndarray] = []
        self.rates_: list[np.ndarray] = []
        self.shares_: list[float] = []
        self.task_classes_: list[str] = []
        self.prior_: np.ndarray | None = None
        self.space_ = JointSpace(dense_weight=config.dense_weight)

    def fit(
        self,
        f: Features,
        y: np.ndarray,
        w: np.ndarray | None = None,
        tasks: Sequence[str] | None = None,
    ) -> SoftClusterModel:
        """y: (n, tiers) pass labels in [0, 1]; NaN = unknown (masked); w: label weights;
        tasks: each prompt's category ("" = unknown), to fit the category head."""
        from sklearn.cluster import MiniBatchKMeans

        c = self.config
        self.space_ = JointSpace.fit(
            f.hand, c.hand_features, c.hand_weight, c.dense_weight, f.emb if c.center else None
        )
        x = self.space_.apply(f.emb, f.hand, f.dense)
        known = ~np.isnan(y)
        wt = np.ones_like(y) if w is None else np.where(known, w, 0.0)
        known_w = known * wt  # a label counts with its (inverse-propensity) weight
        y0 = np.where(known, y, 0.0) * wt
        counts = known_w.sum(axis=0)
        self.prior_ = np.where(counts > 0, y0.sum(axis=0) / np.maximum(counts, 1e-12), 0.5)
        self.centroids_, self.rates_, self.shares_, self.task_classes_ = [], [], [], []
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
            self.centroids_.append(cen / c.temperature)
            self.rates_.append(self._rates(member, y0, known_w))
        head = self._fit_task_head(x, y0, known_w, tasks) if tasks is not None else None
        share = c.task_weight if head is not None else 0.0
        self.shares_ = [(1.0 - share) / len(self.centroids_)] * len(self.centroids_)
        if head is not None:
            self.centroids_.append(head[0])
            self.rates_.append(head[1])
            self.shares_.append(share)
        return self

    def _rates(self, member: np.ndarray, y0: np.ndarray, known_w: np.ndarray) -> np.ndarray:
        """Pass rate per column of `member`, shrunk toward the tier's overall rate.

        Averaging over several shrinkage strengths is robust to cluster size and free at
        run time (the average folds into one rate table).
        """
        assert self.prior_ is not None  # set by fit before any rates
        prior = self.prior_
        hits, seen = member.T @ y0, member.T @ known_w
        rates = np.mean(
            [(hits + a * prior) / (seen + a) for a in self.config.prior_strengths], axis=0
        )
        return rates.astype(np.float32)

    def _fit_task_head(
        self, x: np.ndarray, y0: np.ndarray, known_w: np.ndarray, tasks: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(weights (classes, dims), rates (classes, tiers)), or None without 2 categories."""
        from sklearn.linear_model import LogisticRegression

        c = self.config
        if len(tasks) != len(x):
            raise ValueError(f"got {len(tasks)} task labels for {len(x)} prompts")
        if c.task_weight == 0.0:
            return None
        names, counts = np.unique(np.asarray(tasks, dtype=object), return_counts=True)
        big = {str(t) for t, k in zip(names, counts, strict=True) if t and k >= c.task_min_rows}
        labels = np.array([t if t in big else (OTHER_TASKS if t else "") for t in tasks])
        rows = labels != ""
        classes = sorted(set(labels[rows]))
        if len(big) < 2 or rows.sum() < 2 * c.task_min_rows:
            return None
        clf = LogisticRegression(C=c.task_c, fit_intercept=False, max_iter=2000)
        clf.fit(x[rows], labels[rows])
        weights = clf.coef_.astype(np.float64)
        if len(classes) == 2:  # sklearn keeps one row for two classes: logits +z / -z
            weights = np.vstack([-weights[0] / 2, weights[0] / 2])
        norm = float(np.linalg.norm(weights, axis=1).max())
        if norm > TASK_MAX_NORM:  # softer category probabilities, same ranking
            weights *= TASK_MAX_NORM / norm
        onehot = (labels[:, None] == np.array(classes)[None, :]).astype(np.float64)
        self.task_classes_ = classes
        return weights.astype(np.float32), self._rates(onehot, y0, known_w)

    def _membership(self, x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        return _softmax_rows((x @ centroids.T) / self.config.temperature)

    def sets(self) -> list[SoftmaxSet]:
        """The fitted model as softmax sets (router.softmax_sets): no bias, each set's
        share folded into its rates."""
        if not self.centroids_:
            raise RuntimeError("model is not fitted")
        return [
            SoftmaxSet(w, np.zeros(len(w), dtype=np.float32), (r * share).astype(np.float32))
            for w, r, share in zip(self.centroids_, self.rates_, self.shares_, strict=True)
        ]

    def softmax_sets(self) -> SoftmaxSets:
        return SoftmaxSets.from_sets(self.sets())

    def predict_proba(self, f: Features) -> np.ndarray:
        x = self.space_.apply(f.emb, f.hand, f.dense)
        return np.clip(self.softmax_sets().predict(x), 0.0, 1.0)
