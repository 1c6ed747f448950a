"""Pick the model family for this training file from out-of-fold predictions.

Every candidate (training/candidates.py) is scored on the same folds of the training
split with the project's own curve metric (pgr_auc, training/evaluate.py). What a
family tunes is tuned inside the folds, so its out-of-fold figure stays honest: the
logistic regression's strength per fold is the one with the best log-loss on the other
folds' predictions, and so is the blend's weight (by pgr_auc).

Noise, concretely: a paired bootstrap over the out-of-fold prompts (the same resampled
prompts for every candidate) gives the standard deviation of each candidate's pgr_auc
minus the best one's. The simplest candidate within one such standard deviation of the
best is kept (the one-standard-error rule): logistic, then soft-cluster, then blend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from training.candidates import (
    BlendModel,
    LogisticConfig,
    LogisticModel,
    SetModel,
    check_runtime_bounds,
)
from training.evaluate import curve_metrics, upper_envelope
from training.featurize import Features
from training.model import ModelConfig, SoftClusterModel

log = logging.getLogger(__name__)

SIMPLEST_FIRST = ("logistic", "soft_cluster", "blend")


class Fittable(Protocol):
    def fit(
        self,
        f: Features,
        y: np.ndarray,
        w: np.ndarray | None = ...,
        tasks: Sequence[str] | None = ...,
    ) -> Any: ...

    def predict_proba(self, f: Features) -> np.ndarray: ...


@dataclass(frozen=True)
class SelectionConfig:
    families: tuple[str, ...] = SIMPLEST_FIRST
    logistic_c: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    blend_weights: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    bootstrap: int = 100
    noise_sd: float = 1.0  # "within noise" = within this many bootstrap SDs of the best

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in SIMPLEST_FIRST]
        if not self.families or unknown:
            raise ValueError(f"model families must be among {list(SIMPLEST_FIRST)}, got {unknown}")
        if "blend" in self.families and not {"logistic", "soft_cluster"} <= set(self.families):
            raise ValueError("the blend candidate needs both the logistic and soft_cluster ones")
        if not self.logistic_c or any(c <= 0 for c in self.logistic_c):
            raise ValueError(f"logistic C values must be > 0, got {self.logistic_c}")
        if not self.blend_weights or any(not 0 <= a <= 1 for a in self.blend_weights):
            raise ValueError(f"blend weights must be in [0, 1], got {self.blend_weights}")
        if self.bootstrap < 0 or self.noise_sd < 0:
            raise ValueError("bootstrap rounds and noise_sd must be >= 0")


@dataclass
class Selection:
    name: str  # the selected family
    model: SoftClusterModel | SetModel  # fitted on every training row
    oof: np.ndarray  # the selected family's out-of-fold P(pass), as exported
    report: dict[str, Any] = field(default_factory=dict)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """The fold of each training row (as training/pipeline.py has always drawn them)."""
    return np.random.default_rng(seed).permutation(n) % folds


def out_of_fold(
    make: Callable[[], Fittable],
    f: Features,
    y: np.ndarray,
    fold: np.ndarray,
    w: np.ndarray | None = None,
    tasks: Sequence[str] | None = None,
) -> np.ndarray:
    p = np.zeros(y.shape, dtype=np.float32)
    for k in np.unique(fold):
        tr, va = np.where(fold != k)[0], np.where(fold == k)[0]
        wt = None if w is None else w[tr]
        tt = None if tasks is None else [tasks[i] for i in tr]
        p[va] = make().fit(f.take(tr), y[tr], wt, tt).predict_proba(f.take(va))
    return p


def fast_pgr_auc(
    p: np.ndarray, q: np.ndarray, c: np.ndarray, c_decide: np.ndarray | None = None
) -> float:
    """curve_metrics' pgr_auc with the sweep vectorised (for the bootstrap and the
    blend weight; equal to it up to float rounding, tested). c_decide: the costs the
    utility sweep decides with (knowable before the call); None = c itself."""
    n, t = p.shape
    rows = np.arange(n)
    taus = np.linspace(0.0, 1.0, 101)
    ok = p[None, :, :] >= taus[:, None, None]
    pick_tau = np.where(ok.any(axis=2), ok.argmax(axis=2), t - 1)
    cd = c if c_decide is None else c_decide
    scale = float(cd.mean()) or 1.0
    lams = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 120)])
    pick_lam = np.argmax(p[None, :, :] - lams[:, None, None] * (cd / scale)[None], axis=2)
    picks = np.vstack([pick_tau, pick_lam])
    cost, qual = c[rows, picks].mean(axis=1), q[rows, picks].mean(axis=1)
    fixed = [(float(c[:, j].mean()), float(q[:, j].mean())) for j in range(t)]
    env = upper_envelope(list(zip(cost.tolist(), qual.tolist(), strict=True)) + fixed)
    (c0, q0), (c1, q1) = fixed[0], fixed[-1]
    if q1 == q0:
        return float("nan")
    xs, ys = np.array([e[0] for e in env]), np.array([e[1] for e in env])
    grid = np.linspace(c0, c1, 201)
    at = np.interp(grid, xs, ys)
    at[grid < xs[0]] = np.nan
    return float(np.nanmean((at - q0) / (q1 - q0)))


def _log_loss(p: np.ndarray, y: np.ndarray, rows: np.ndarray) -> float:
    yy, pp = y[rows], np.clip(p[rows], 1e-6, 1 - 1e-6)
    known = ~np.isnan(yy)
    ll = -(yy * np.log(pp) + (1 - yy) * np.log(1 - pp))
    return float(ll[known].mean()) if known.any() else 0.0


def cross_fit(
    options: Sequence[np.ndarray], fold: np.ndarray, loss: Callable[[np.ndarray, np.ndarray], float]
) -> tuple[np.ndarray, list[int], int]:
    """Honest out-of-fold predictions from several settings: each fold takes the
    setting with the lowest loss on the other folds. Returns them, each fold's choice,
    and the setting with the lowest loss on all rows (what the exported model uses)."""
    out = np.zeros_like(options[0])
    chosen = []
    for k in np.unique(fold):
        other, mine = np.where(fold != k)[0], fold == k
        j = int(np.argmin([loss(o, other) for o in options]))
        out[mine] = options[j][mine]
        chosen.append(j)
    every = np.arange(len(fold))
    return out, chosen, int(np.argmin([loss(o, every) for o in options]))


def select_model(
    model_cfg: ModelConfig,
    f: Features,
    y: np.ndarray,
    q: np.ndarray,
    c: np.ndarray,
    complete: np.ndarray,
    folds: int,
    seed: int,
    w: np.ndarray | None = None,
    tasks: Sequence[str] | None = None,
    cfg: SelectionConfig | None = None,
    c_decide: np.ndarray | None = None,
) -> Selection:
    """Score every candidate out of fold, keep the simplest within noise of the best,
    and fit it on every row. q, c: per-prompt quality and cost; complete: rows with
    every tier's score (the only ones a curve can be computed on); c_decide: the costs
    the utility sweep decides with (evaluate.knowable_costs; None = c)."""
    cfg = cfg or SelectionConfig()
    cd = c if c_decide is None else c_decide
    fold = fold_ids(len(y), folds, seed)
    rows = np.where(complete)[0]
    scorable = len(rows) > 10 and float(np.ptp(q[rows].mean(axis=0))) > 0

    def pgr(p: np.ndarray, idx: np.ndarray = rows) -> float:
        return fast_pgr_auc(p[idx], q[idx], c[idx], cd[idx]) if scorable else float("nan")

    oof: dict[str, np.ndarray] = {}
    detail: dict[str, dict[str, Any]] = {}
    if "soft_cluster" in cfg.families:
        log.info("candidate soft_cluster: %d-fold out-of-fold predictions", folds)
        oof["soft_cluster"] = out_of_fold(lambda: SoftClusterModel(model_cfg), f, y, fold, w, tasks)
        detail["soft_cluster"] = {"params": model_cfg.params()}
    lr_options: list[np.ndarray] = []
    lr_final = 0
    if "logistic" in cfg.families:
        log.info("candidate logistic: C in %s, %d folds each", cfg.logistic_c, folds)

        def logistic(c_: float) -> Callable[[], Fittable]:
            return lambda: LogisticModel(model_cfg, LogisticConfig(c=c_))

        lr_options = [out_of_fold(logistic(c_), f, y, fold, w) for c_ in cfg.logistic_c]
        oof["logistic"], per_fold, lr_final = cross_fit(
            lr_options, fold, lambda p, r: _log_loss(p, y, r)
        )
        detail["logistic"] = {
            "c": cfg.logistic_c[lr_final],
            "c_per_fold": [cfg.logistic_c[j] for j in per_fold],
        }
    blend_final = 0.5
    if "blend" in cfg.families:
        sc, lr = oof["soft_cluster"], lr_options[lr_final]
        mixes = [a * sc + (1 - a) * oof["logistic"] for a in cfg.blend_weights]

        def neg_pgr(p: np.ndarray, r: np.ndarray) -> float:
            idx = np.intersect1d(r, rows)
            return -pgr(p, idx) if scorable and len(idx) > 10 else 0.0

        oof["blend"], per_fold, j = cross_fit(mixes, fold, neg_pgr)
        blend_final = cfg.blend_weights[j]
        oof_export = blend_final * sc + (1 - blend_final) * lr
        detail["blend"] = {
            "weight_soft_cluster": blend_final,
            "weight_per_fold": [cfg.blend_weights[i] for i in per_fold],
        }

    figures = {name: _figures(p, q, c, cd, rows, scorable) for name, p in oof.items()}
    noise = _paired_noise(oof, q, c, cd, rows, cfg.bootstrap, seed) if scorable else {}
    names = [n for n in SIMPLEST_FIRST if n in oof]
    scores = {n: figures[n].get("pgr_auc", float("nan")) for n in names}
    best = max(names, key=lambda n: (np.nan_to_num(scores[n], nan=-np.inf), -names.index(n)))
    chosen = best
    for n in names:  # simplest first
        d = noise.get(n, {}).get(best)
        if n == best or (d is not None and d["mean"] + cfg.noise_sd * d["sd"] >= 0):
            chosen = n
            break
    log.info(
        "out-of-fold pgr_auc: %s; best %s, selected %s",
        ", ".join(f"{n} {scores[n]:.4f}" for n in names),
        best,
        chosen,
    )
    model: SoftClusterModel | SetModel
    sc_model = None
    if chosen in ("soft_cluster", "blend"):
        sc_model = SoftClusterModel(model_cfg).fit(f, y, w, tasks)
    if chosen == "soft_cluster":
        assert sc_model is not None
        model, exported = sc_model, oof["soft_cluster"]
    else:
        lr_model = LogisticModel(model_cfg, LogisticConfig(c=cfg.logistic_c[lr_final])).fit(f, y, w)
        if chosen == "logistic":
            model, exported = lr_model, lr_options[lr_final]
        else:
            assert sc_model is not None
            model, exported = BlendModel(sc_model, lr_model, blend_final), oof_export
        check_runtime_bounds(model)
    report = {
        "selected": chosen,
        "best_out_of_fold": best,
        "rule": (
            f"simplest of {names} whose out-of-fold pgr_auc minus the best's is within "
            f"{cfg.noise_sd:g} bootstrap SD ({cfg.bootstrap} paired resamples of the "
            f"{len(rows)} complete out-of-fold prompts)"
        ),
        "candidates": {
            n: {**figures[n], **detail.get(n, {}), "minus_best": noise.get(n, {}).get(best)}
            for n in names
        },
    }
    return Selection(chosen, model, exported.astype(np.float32), report)


def _figures(
    p: np.ndarray, q: np.ndarray, c: np.ndarray, cd: np.ndarray, rows: np.ndarray, scorable: bool
) -> dict[str, float]:
    if not scorable:
        return {}
    m = curve_metrics(p[rows], q[rows], c[rows], cd[rows])
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float)}


def _paired_noise(
    oof: dict[str, np.ndarray],
    q: np.ndarray,
    c: np.ndarray,
    cd: np.ndarray,
    rows: np.ndarray,
    rounds: int,
    seed: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """For each pair (a, b): mean and SD of pgr_auc(a) - pgr_auc(b) over resamples."""
    if rounds < 2 or len(oof) < 2:
        return {}
    rng = np.random.default_rng(seed)
    names = list(oof)
    draws: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        i = rows[rng.integers(0, len(rows), len(rows))]
        for n in names:
            draws[n].append(fast_pgr_auc(oof[n][i], q[i], c[i], cd[i]))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for a in names:
        for b in names:
            if a != b:
                d = np.array(draws[a]) - np.array(draws[b])
                out.setdefault(a, {})[b] = {
                    "mean": float(np.nanmean(d)),
                    "sd": float(np.nanstd(d)),
                }
    return out
