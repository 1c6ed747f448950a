"""Fit the answer verifier and export it into the bundle.

Per tier and context a standardized logistic regression (router.verifier), cross-fitted on
the same folds as the router so every training prompt gets an out-of-fold P(pass) for its
answers (what the cascade policy is searched on); the final weights are fitted on all rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.bundle import VERIFIER_MODEL, VERIFIER_WEIGHTS, write_arrays
from router.ladder import Ladder
from router.verifier import (
    BIAS,
    CONTEXT_NAMES,
    CONTEXTS,
    HAND_FEATURES,
    N_FEATURES,
    PAIR_FEATURES,
    VERIFIER_INPUT,
    WEIGHTS,
    WITH_PREV,
    WITH_SECOND,
    feature_vector,
)
from training.recorded_answers import AnswerSet

_OWN = list(range(HAND_FEATURES + 1))  # hand features and the router's logit
_SECOND = list(range(HAND_FEATURES + 1, HAND_FEATURES + 1 + PAIR_FEATURES))
_PREV = list(range(HAND_FEATURES + 1 + PAIR_FEATURES, N_FEATURES))
_GROUPS = {  # feature columns each context may use
    0: _OWN,
    WITH_SECOND: _OWN + _SECOND,
    WITH_PREV: _OWN + _PREV,
    WITH_SECOND + WITH_PREV: _OWN + _SECOND + _PREV,
}


def vectors(answers: AnswerSet, p_router: np.ndarray, tier: int, context: int) -> np.ndarray:
    """(n, F) verifier inputs for one tier and context; NaN rows where inputs are missing."""
    n = len(answers.reads)
    x = np.full((n, N_FEATURES), np.nan)
    for i in range(n):
        a = answers.reads[i][tier]
        s = answers.second[i] if answers.second is not None and context & WITH_SECOND else None
        prev = answers.reads[i][tier - 1] if tier > 0 and context & WITH_PREV else None
        if (
            a is None
            or (context & WITH_SECOND and s is None)
            or (context & WITH_PREV and prev is None)
        ):
            continue
        x[i] = feature_vector(a, float(p_router[i, tier]), s, prev)
    return x


def _fit_lr(x: np.ndarray, y: np.ndarray, cols: list[int], c: float) -> tuple[np.ndarray, float]:
    """Standardized L2 logistic regression on `cols`, folded back to raw-feature weights."""
    from sklearn.linear_model import LogisticRegression

    w = np.zeros(N_FEATURES)
    if len(np.unique(y)) < 2:
        p = float(np.clip(y.mean() if len(y) else 0.5, 1e-3, 1 - 1e-3))
        return w, math.log(p / (1 - p))
    xs = x[:, cols]
    mu, sd = xs.mean(axis=0), xs.std(axis=0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    m = LogisticRegression(C=c, max_iter=2000).fit((xs - mu) / sd, y)
    coef = m.coef_[0] / sd
    w[cols] = coef
    return w, float(m.intercept_[0] - coef @ mu)


MIN_ROWS = 20  # rows with a label needed to fit one tier and context


@dataclass
class FittedVerifier:
    weights: np.ndarray  # (F, tiers * contexts)
    bias: np.ndarray  # (tiers * contexts,)
    oof: np.ndarray  # (n, tiers, contexts) out-of-fold P(pass), NaN where not computable
    auc: dict[str, float]  # "tier.context" -> out-of-fold AUC of the verifier
    router_auc: dict[str, float]  # the router's P(pass) on the same rows
    fallback: list[str]  # contexts where the verifier did not beat the router: it is the router


def fit_verifier(
    answers: AnswerSet,
    p_router_oof: np.ndarray,
    passed: np.ndarray,
    fold: np.ndarray,
    *,
    c: float = 1.0,
) -> FittedVerifier:
    n, tiers = passed.shape
    weights = np.zeros((N_FEATURES, tiers * CONTEXTS))
    bias = np.zeros(tiers * CONTEXTS)
    oof = np.full((n, tiers, CONTEXTS), np.nan)
    auc: dict[str, float] = {}
    router_auc: dict[str, float] = {}
    fallback: list[str] = []
    for t in range(tiers):
        for k in range(CONTEXTS):
            if (k & WITH_PREV and t == 0) or (k & WITH_SECOND and answers.second is None):
                continue
            x = vectors(answers, p_router_oof, t, k)
            ok = ~np.isnan(x).any(axis=1) & ~np.isnan(passed[:, t])
            if ok.sum() < MIN_ROWS:
                # Too few rows to fit: the tier's base rate, in the bundle and in the rows
                # the policy is searched on alike (serving must score what training saw).
                known = ~np.isnan(passed[:, t])
                rate = float(passed[known, t].mean()) if known.any() else 0.5
                rate = min(max(rate, 1e-3), 1 - 1e-3)
                bias[t * CONTEXTS + k] = math.log(rate / (1 - rate))
                oof[~np.isnan(x).any(axis=1), t, k] = rate
                continue
            y = passed[ok, t]
            cols = _GROUPS[k]
            for f in np.unique(fold):
                tr, va = ok & (fold != f), ok & (fold == f)
                if not va.any():
                    continue
                w, b = _fit_lr(x[tr], passed[tr, t], cols, c)
                oof[va, t, k] = _sigmoid(x[va] @ w + b)
            name = f"{t}.{CONTEXT_NAMES[k]}"
            auc[name] = _auc(oof[ok, t, k], y)
            router_auc[name] = _auc(p_router_oof[ok, t], y)
            if not auc[name] > router_auc[name]:
                # The answer does not rank better than the prompt did: in this context the
                # verifier is the router's own P(pass) (weight 1 on its logit), so the
                # cascade judges no worse than routing alone, here and in serving alike.
                weights[HAND_FEATURES, t * CONTEXTS + k] = 1.0
                has = ~np.isnan(x).any(axis=1)
                oof[has, t, k] = np.clip(p_router_oof[has, t], 1e-4, 1 - 1e-4)
                fallback.append(name)
                continue
            w, b = _fit_lr(x[ok], y, cols, c)
            weights[:, t * CONTEXTS + k], bias[t * CONTEXTS + k] = w, b
    return FittedVerifier(weights, bias, oof, auc, router_auc, fallback)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC with tied scores sharing their average rank (a constant scores 0.5)."""
    pos, neg = p[y > 0.5], p[y <= 0.5]
    if not len(pos) or not len(neg):
        return float("nan")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    sorted_v = both[order]
    ranks = np.empty(len(both))
    # Average rank of each run of equal values.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(both)]
    avg = (starts + ends + 1) / 2.0  # 1-based ranks starts+1 .. ends
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def export_verifier(fitted: FittedVerifier, ladder: Ladder, out_dir: Path) -> None:
    """verifier.onnx (one MatMul, Add, Sigmoid) and the two arrays it is made of
    (verifier_weights.npz, what router.verifier scores one answer with)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from training.onnx_graph import IR_VERSION, OPSET

    cols = fitted.bias.shape[0]
    inits = [
        numpy_helper.from_array(fitted.weights.astype(np.float32), WEIGHTS),
        numpy_helper.from_array(fitted.bias.astype(np.float32), BIAS),
    ]
    nodes = [
        helper.make_node("MatMul", [VERIFIER_INPUT, WEIGHTS], ["z0"]),
        helper.make_node("Add", ["z0", BIAS], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p_pass"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tier_router_verifier",
        [helper.make_tensor_value_info(VERIFIER_INPUT, TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info("p_pass", TensorProto.FLOAT, ["batch", cols])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="tier-router",
        doc_string=f"tier-router answer verifier for {ladder.names}: columns tier*4+context",
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(out_dir / VERIFIER_MODEL))
    write_arrays(
        out_dir / VERIFIER_WEIGHTS,
        {"weights": fitted.weights.astype(np.float32), "bias": fitted.bias.astype(np.float32)},
    )
