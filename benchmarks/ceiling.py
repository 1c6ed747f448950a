"""How far any text router could go on a file: routers given information text lacks.

    python benchmarks/ceiling.py [--files mmlu_pro,routerbench_subset,llmrouter_dcrouter]

A router reads only the prompt. The routers below are given more, and are judged by the
same outside check (../shared/tools/routeval.py) on the test split:

- task: each tier's pass rate within the prompt's benchmark category (train split);
  the design doc's "task-aware" reference.
- task+difficulty: that, plus the prompt's true difficulty (the share of the file's
  other models, those not on the ladder, that passed *this* test prompt).
- task+difficulty ~ rho: the same difficulty blurred with noise until its rank
  correlation with the truth within a category is about rho: a stand-in for an
  estimate of that quality.
- task+text difficulty: the difficulty estimated from the prompt's words (ridge regression
  on the fast featurizer's joint space; out-of-fold on the train split).
  `text_difficulty_spearman` is its rank correlation with the truth within a category.
- task+other outcomes: the category plus each other model's own result on this prompt.
- oracle: the tiers' own results.

Each added signal goes through one logistic regression per tier, fitted on the train
split. No text router knows a test prompt's difficulty; it estimates it from the words.
The noisy rows show how good that estimate must be before a quality bar comes in reach.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from quality import REFERENCE, SHARED, ladder_columns, routeval, task_rates
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge

from outcomes import iter_outcomes
from router.featurizer import Featurizer, FeaturizerConfig
from router.joint_space import JointSpace
from training import assets
from training.featurize import featurize
from training.model import ModelConfig

PASS = 0.5


def other_outcomes(path: Path, ids: list[str], ladder_models: list[str]) -> np.ndarray:
    """(prompts, other models) pass/fail, NaN where a model has no result."""
    by_id = {r.id: r.results for r in iter_outcomes(path)}
    others = sorted({m for i in ids for m in by_id[i]} - set(ladder_models))
    out = np.full((len(ids), len(others)), np.nan)
    for row, i in enumerate(ids):
        for col, m in enumerate(others):
            res = by_id[i].get(m)
            if res is not None:
                out[row, col] = float(res.score >= PASS)
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def combined(x: np.ndarray, passed: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """P(pass) per tier: logistic regression on x plus that tier's logit category rate.

    x's last columns are shared by all tiers; column t of `x[:, :tiers]` is tier t's own.
    """
    tiers = passed.shape[1]
    p = np.zeros((len(test), tiers))
    for t in range(tiers):
        xt = np.hstack([x[:, t : t + 1], x[:, tiers:]])
        clf = LogisticRegression(C=1.0, max_iter=1000)
        p[:, t] = clf.fit(xt[train], passed[train, t]).predict_proba(xt[test])[:, 1]
    return p


def within_task_z(d: np.ndarray, tasks: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Standardise a difficulty per category (train rows' mean and spread), plus its square."""
    z = np.zeros(len(d))
    for t in np.unique(tasks):
        rows = tasks == t
        ref = d[train[tasks[train] == t]] if (tasks[train] == t).any() else d[rows]
        z[rows] = (d[rows] - ref.mean()) / (ref.std() + 1e-9)
    return np.column_stack([z, z**2])


def text_difficulty(prompts: list[str], difficulty: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Difficulty as a fast-featurizer router could estimate it: ridge on its joint space."""
    static = assets.static_assets()
    fz = Featurizer(FeaturizerConfig(kind="fast"), static.tokenizer_json, static.table, None)
    f = featurize(prompts, fz)
    cfg = ModelConfig()
    space = JointSpace.fit(
        f.hand[train], cfg.hand_features, cfg.hand_weight, cfg.dense_weight, f.emb[train]
    )
    x = space.apply(f.emb, f.hand, None)
    out = Ridge(alpha=3.0).fit(x[train], difficulty[train]).predict(x)
    # Train rows get out-of-fold estimates, so what the booster learns from is as noisy
    # as what it will see on test prompts.
    fold = np.random.default_rng(0).permutation(len(train)) % 5
    for k in range(5):
        fit, held = train[fold != k], train[fold == k]
        out[held] = Ridge(alpha=3.0).fit(x[fit], difficulty[fit]).predict(x[held])
    return out


def within_task_spearman(est: np.ndarray, true: np.ndarray, tasks: np.ndarray) -> float:
    rhos = [
        spearmanr(est[tasks == t], true[tasks == t])[0]
        for t in np.unique(tasks)
        if (tasks == t).sum() >= 30
    ]
    return round(float(np.nanmean(rhos)), 3) if rhos else float("nan")


def interval(rv, p: np.ndarray, q: np.ndarray, c: np.ndarray, rounds: int) -> list[float]:
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(rounds):
        i = rng.integers(0, len(q), len(q))
        vals.append(rv.metrics(p[i], q[i], c[i])["pgr_auc"])
    return [round(float(v), 4) for v in np.percentile(vals, [2.5, 97.5])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", default=",".join(REFERENCE), help="comma-separated file names")
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples for 95%% intervals")
    a = ap.parse_args()
    rv = routeval()
    for name in a.files.split(","):
        data = SHARED / "data" / f"{name}.jsonl.gz"
        models, prices = rv.LADDERS.get(name) or ladder_columns(name)
        tab = rv.load(str(data), models, prices)
        test, train = np.where(tab.split)[0], np.where(~tab.split)[0]
        everyone = np.arange(len(tab.ids))
        passed = (tab.q >= PASS).astype(float)
        task = _logit(task_rates(tab, train, everyone))
        tasks = np.array(tab.tasks)
        others = other_outcomes(data, tab.ids, models)
        difficulty = np.nanmean(others, axis=1)
        guess = text_difficulty(tab.prompts, difficulty, train)
        z = within_task_z(difficulty, tasks, train)[:, 0]
        routers = {
            "task": task_rates(tab, train, test),
            "task+difficulty": combined(
                np.hstack([task, within_task_z(difficulty, tasks, train)]), passed, train, test
            ),
        }
        noise = np.random.default_rng(0).normal(size=len(z))
        for sd in (0.5, 1.0, 1.5):
            blurred = z + sd * noise
            rho = within_task_spearman(blurred[test], difficulty[test], tasks[test])
            routers[f"task+difficulty ~ {rho:.2f}"] = combined(
                np.hstack([task, within_task_z(blurred, tasks, train)]), passed, train, test
            )
        routers["task+text difficulty"] = combined(
            np.hstack([task, within_task_z(guess, tasks, train)]), passed, train, test
        )
        routers["task+other outcomes"] = combined(
            np.hstack([task, np.nan_to_num(others, nan=PASS)]), passed, train, test
        )
        routers["oracle"] = rv.oracle_probs(tab.q[test])
        q, c = tab.q[test], tab.c[test]
        row: dict[str, object] = {
            "file": name,
            "other_models": others.shape[1],
            "text_difficulty_spearman": within_task_spearman(
                guess[test], difficulty[test], tasks[test]
            ),
        }
        ref = REFERENCE.get(name)
        if ref:
            row["bar"] = {"pgr_auc": round(ref[0] + 0.02, 2), "cost_at_mid": ref[1]}
        for label, p in routers.items():
            m = rv.metrics(p, q, c)
            row[label] = {
                "pgr_auc": round(m["pgr_auc"], 4),
                "cost_at_mid": round(float(m["cost_at_mid"]), 4),
                **({"pgr_auc_95": interval(rv, p, q, c, a.bootstrap)} if a.bootstrap else {}),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
