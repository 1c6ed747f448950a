"""Candidate model families for `train`, all exporting one bundle graph.

Every candidate is a sum of softmax sets over the joint-space vector x
(router/joint_space.py): P(pass | tier) = sum over sets g of softmax(x W_g + b_g) R_g.
The soft-cluster model (training/model.py) is such a sum; so is a per-tier logistic
regression, written as one two-column set per tier (logits [w_t x + b_t, 0], rates
[e_t, 0]), since softmax([z, 0])[0] = sigmoid(z); and so is a convex blend of the two
(every set's rates times its weight). One form (router/softmax_sets.py) means one
definition of the math, one ONNX export and one single-request evaluation for all.

Why these: on the public files the soft clusters won, but on a hidden chat set a plain
logistic regression on the embedding plus length beat them (0.749 vs 0.728 pgr_auc),
so `train` measures which fits the user's data (training/selection.py). The blend is
nearly free (both members are fitted anyway) and often beats each alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from router.joint_space import JointSpace
from router.softmax_sets import SoftmaxSet, SoftmaxSets
from training.featurize import Features
from training.model import ModelConfig, SoftClusterModel

# The single-request path evaluates exp(logit) without subtracting the maximum (exact while
# every weight row's norm and every bias stays under router.softmax_sets.MAX_LOGIT); a
# fitted logistic weight vector longer than this is shrunk, with its intercept, toward
# zero (same ranking).
LOGISTIC_MAX_NORM = 30.0


@dataclass(frozen=True)
class LogisticConfig:
    """Per-tier L2 logistic regression on the standardized joint vector.

    c: inverse regularisation on standardized columns. `train` does not use this default:
    training/selection.py cross-fits c over a grid (0.003-0.1) inside the folds. On the
    five public files smaller c did better out of fold (0.003 or 0.01 was picked) and
    keeps the folded weights inside LOGISTIC_MAX_NORM.
    """

    c: float = 0.05
    max_iter: int = 300

    def __post_init__(self) -> None:
        if self.c <= 0 or self.max_iter < 1:
            raise ValueError(
                f"logistic c must be > 0 and max_iter >= 1, got {self.c}, {self.max_iter}"
            )

    def params(self) -> dict[str, object]:
        return asdict(self)


class SetModel:
    """A fitted sum of softmax sets in a joint space: predict_proba and softmax_sets."""

    name = "sets"

    def __init__(self, space: JointSpace, sets: list[SoftmaxSet], task_classes: list[str]):
        self.space_ = space
        self.sets_ = sets
        self.task_classes_ = task_classes

    # The attributes training/pipeline.py reads off a fitted model.
    @property
    def centroids_(self) -> list[np.ndarray]:
        return [s.weights for s in self.sets_]

    @property
    def shares_(self) -> list[float]:
        """Each set's share of P(pass) (the largest rate sum over tiers)."""
        return [float(s.rates.sum(axis=0).max()) if len(s.rates) else 0.0 for s in self.sets_]

    @property
    def dims(self) -> int:
        return int(self.sets_[0].weights.shape[1])

    def joint(self, f: Features) -> np.ndarray:
        return self.space_.apply(f.emb, f.hand, f.dense)

    def softmax_sets(self) -> SoftmaxSets:
        return SoftmaxSets.from_sets(self.sets_)

    def predict_proba(self, f: Features) -> np.ndarray:
        return np.clip(self.softmax_sets().predict(self.joint(f)), 0.0, 1.0)


def fit_space(config: ModelConfig, f: Features) -> JointSpace:
    """The joint space exactly as SoftClusterModel.fit builds it (same inputs, same space)."""
    return JointSpace.fit(
        f.hand,
        config.hand_features,
        config.hand_weight,
        config.dense_weight,
        f.emb if config.center else None,
    )


class LogisticModel(SetModel):
    """Per-tier logistic regression on the joint vector; unknown labels are masked."""

    name = "logistic"

    def __init__(self, config: ModelConfig, lr: LogisticConfig):
        super().__init__(JointSpace(), [], [])
        self.config = config
        self.lr = lr

    def fit(
        self,
        f: Features,
        y: np.ndarray,
        w: np.ndarray | None = None,
        tasks: Sequence[str] | None = None,
    ) -> LogisticModel:
        """y: (n, tiers) pass labels, NaN = unknown; tasks are not used."""
        self.space_ = fit_space(self.config, f)
        x = self.space_.apply(f.emb, f.hand, f.dense).astype(np.float64)
        mu, sd = x.mean(axis=0), x.std(axis=0)
        sd[sd < 1e-6] = 1.0
        z = (x - mu) / sd
        tiers = y.shape[1]
        self.sets_ = []
        for t in range(tiers):
            coef, icpt = self._fit_tier(z, y[:, t], None if w is None else w[:, t])
            wt = coef / sd  # back to the joint vector: w.x + b == coef.z + icpt
            bt = icpt - float(wt @ mu)
            norm = float(np.linalg.norm(wt))
            if norm > LOGISTIC_MAX_NORM:
                scale = LOGISTIC_MAX_NORM / norm
                wt, bt = wt * scale, bt * scale
            bt = float(np.clip(bt, -LOGISTIC_MAX_NORM, LOGISTIC_MAX_NORM))
            rates = np.zeros((2, tiers), dtype=np.float32)
            rates[0, t] = 1.0
            self.sets_.append(
                SoftmaxSet(
                    np.vstack([wt, np.zeros_like(wt)]).astype(np.float32),
                    np.array([bt, 0.0], dtype=np.float32),
                    rates,
                )
            )
        return self

    def _fit_tier(
        self, z: np.ndarray, y: np.ndarray, w: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        from sklearn.linear_model import LogisticRegression

        known = ~np.isnan(y)
        yk = y[known] >= 0.5
        sw = None if w is None else w[known]
        if not known.any() or yk.all() or not yk.any():  # one class: a constant rate
            rate = float(np.clip(yk.mean() if known.any() else 0.5, 1e-3, 1 - 1e-3))
            return np.zeros(z.shape[1]), float(np.log(rate / (1 - rate)))
        clf = LogisticRegression(C=self.lr.c, max_iter=self.lr.max_iter)
        clf.fit(z[known], yk.astype(int), sample_weight=sw)
        return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


class BlendModel(SetModel):
    """alpha * soft-cluster + (1 - alpha) * logistic, both on the same joint space."""

    name = "blend"

    def __init__(self, soft: SoftClusterModel, logistic: LogisticModel, alpha: float):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"blend weight must be in [0, 1], got {alpha}")
        if soft.space_ != logistic.space_:
            raise ValueError("blend members were fitted in different joint spaces")
        # Logistic sets first, so the category head (when fitted) stays the last set.
        sets = [
            SoftmaxSet(s.weights, s.bias, (s.rates * (1.0 - alpha)).astype(np.float32))
            for s in logistic.sets_
        ] + [
            SoftmaxSet(s.weights, s.bias, (s.rates * alpha).astype(np.float32)) for s in soft.sets()
        ]
        super().__init__(soft.space_, sets, list(soft.task_classes_))
        self.alpha = alpha


def check_runtime_bounds(model: SetModel) -> None:
    """The bounds router/softmax_sets.py needs to evaluate one request exactly fast."""
    model.softmax_sets().check_bounds()
