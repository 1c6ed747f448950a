"""What the accurate featurizer would give, out of fold, beside the model `train` chose.

The fast featurizer routes in microseconds; the accurate one adds the MiniLM encoder
(milliseconds). So a user can see what that speed costs on their own data, `train`
fits one cheap, untuned reference on the accurate featurizer's MiniLM vector plus log
length (a per-tier logistic regression, the "plain" router of DESIGN.md) on the same
folds as the selection, and reports its out-of-fold pgr_auc beside the chosen model's,
with a paired bootstrap SD of the difference. Encoding uses the accurate bundle's own
ONNX encoder on its bounded token window. Opt-in (`train --accurate-reference`): encoding
plus five folds of logistic fits took 1.5 min on 657 prompts and 7 min on 2,212 on a
loaded 2-core machine, more than a default should add.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from training.evaluate import curve_metrics
from training.selection import fast_pgr_auc

log = logging.getLogger(__name__)


def plain_logistic_oof(x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold P(pass) of an untuned per-tier logistic regression on standardized x;
    unknown labels (NaN) are left out of each tier's fit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    p = np.zeros(y.shape, dtype=np.float64)
    for k in np.unique(fold):
        tr, va = fold != k, fold == k
        sc = StandardScaler().fit(x[tr])
        zva = sc.transform(x[va])
        for t in range(y.shape[1]):
            known = tr.copy()
            known[tr] = ~np.isnan(y[tr, t])
            yt = y[known, t] >= 0.5
            if not yt.any() or yt.all():
                p[va, t] = float(yt.mean()) if len(yt) else 0.5
                continue
            clf = LogisticRegression(max_iter=1000).fit(sc.transform(x[known]), yt)
            p[va, t] = clf.predict_proba(zva)[:, 1]
    return p


def accurate_reference(
    prompts: Sequence[str],
    encode: Any,
    selected_oof: np.ndarray,
    y: np.ndarray,
    q: np.ndarray,
    c: np.ndarray,
    c_decide: np.ndarray,
    complete: np.ndarray,
    fold: np.ndarray,
    bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """encode: prompts -> (n, 384) MiniLM vectors (the accurate featurizer's encoder)."""
    t0 = time.monotonic()
    dense = np.asarray(encode(prompts), dtype=np.float64)
    encode_s = time.monotonic() - t0
    x = np.hstack([dense, np.log1p([len(p) for p in prompts])[:, None]])
    ref = plain_logistic_oof(x, y, fold)
    rows = np.where(complete)[0]
    out: dict[str, Any] = {
        "model": "per-tier logistic regression on the accurate featurizer's MiniLM vector "
        "+ log length (untuned), same folds",
        "encode_s": round(encode_s, 1),
        "fit_s": round(time.monotonic() - t0 - encode_s, 1),
    }
    if len(rows) <= 10 or float(np.ptp(q[rows].mean(axis=0))) <= 0:
        return out
    acc = curve_metrics(ref[rows], q[rows], c[rows], c_decide[rows])
    sel = curve_metrics(selected_oof[rows], q[rows], c[rows], c_decide[rows])
    out["accurate_oof_pgr_auc"] = acc["pgr_auc"]
    out["selected_oof_pgr_auc"] = sel["pgr_auc"]
    out["selected_minus_accurate"] = sel["pgr_auc"] - acc["pgr_auc"]
    if bootstrap >= 2:
        rng = np.random.default_rng(seed)
        d = []
        for _ in range(bootstrap):
            i = rows[rng.integers(0, len(rows), len(rows))]
            d.append(
                fast_pgr_auc(selected_oof[i], q[i], c[i], c_decide[i])
                - fast_pgr_auc(ref[i], q[i], c[i], c_decide[i])
            )
        out["difference_sd"] = float(np.nanstd(d))
    return out


def format_line(ref: dict[str, Any], selected: str) -> str:
    """One line for the train table: what the accurate featurizer would give."""
    if "accurate_oof_pgr_auc" not in ref:
        return "accurate featurizer reference: not scorable on these rows"
    sd = ref.get("difference_sd")
    return (
        f"out-of-fold pgr_auc: selected {selected} (fast) {ref['selected_oof_pgr_auc']:.3f}, "
        f"accurate featurizer reference {ref['accurate_oof_pgr_auc']:.3f} "
        f"(difference {ref['selected_minus_accurate']:+.3f}"
        + (f" +- {sd:.3f} SD" if sd is not None else "")
        + f"; MiniLM encoding took {ref['encode_s']:.0f} s)"
    )
