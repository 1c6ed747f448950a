"""Router quality on the public files, judged by the shared outside check (routeval).

    python benchmarks/quality.py --featurizer fast [--files mmlu_pro,routerbench_subset,...]

For each file: `tier-router train` on its train split (ladder from data/ladders), then
`tier-router score --split test`, then ../shared/tools/routeval.py's metrics on those
scores. Prints one JSON line per file and a table; training time is reported too.

Next to the router it scores the design doc's "task-aware" router (each tier's pass rate
within the prompt's benchmark category, from the train split; the category is a label a
request does not carry) and the same with the *test* split's own rates, an upper bound
for routing by category. Bootstrap resamples of the test prompts give the router's 95%
interval and the paired difference to task-aware, which says whether a gap is more than
the luck of one split.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = {  # plain-embedding reference from the design doc: (pgr_auc, cost_at_mid)
    "mmlu_pro": (0.89, 0.79),
    "routerbench_subset": (0.81, 0.48),
    "llmrouter_dcrouter": (0.84, 1.00),
}


def routeval():
    spec = importlib.util.spec_from_file_location("routeval", SHARED / "tools" / "routeval.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["routeval"] = mod
    spec.loader.exec_module(mod)
    return mod


def run(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def ladder_columns(name: str) -> tuple[list[str], list[tuple[float, float]]]:
    """routeval's (models, prices) for a file it has no ladder for, from data/ladders."""
    from router.ladder import Ladder

    lad = Ladder.load(REPO / "data/ladders" / f"{name}.toml")
    return [t.outcomes_key for t in lad.tiers], [
        (t.price_in_per_mtok, t.price_out_per_mtok) for t in lad.tiers
    ]


def task_rates(tab, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """P(pass) per tier = the pass rate of the prompt's category among `rows`."""
    tasks = np.array(tab.tasks)
    passed = (tab.q >= 0.5).astype(float)
    overall = passed[rows].mean(axis=0)
    out = np.empty((len(at), passed.shape[1]))
    for i, t in enumerate(tasks[at]):
        sel = rows[tasks[rows] == t]
        out[i] = passed[sel].mean(axis=0) if len(sel) else overall
    return out


def paired_bootstrap(rv, p: np.ndarray, ref: np.ndarray, q, c, rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    own, diff = [], []
    for _ in range(rounds):
        i = rng.integers(0, len(q), len(q))
        a = rv.metrics(p[i], q[i], c[i])["pgr_auc"]
        own.append(a)
        diff.append(a - rv.metrics(ref[i], q[i], c[i])["pgr_auc"])
    lo, hi = np.percentile(own, [2.5, 97.5])
    dlo, dhi = np.percentile(diff, [2.5, 97.5])
    return {
        "pgr_auc_lo": round(float(lo), 4),
        "pgr_auc_hi": round(float(hi), 4),
        "vs_task_aware": round(float(np.mean(diff)), 4),
        "vs_task_aware_lo": round(float(dlo), 4),
        "vs_task_aware_hi": round(float(dhi), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--featurizer", choices=["fast", "accurate"], default="fast")
    ap.add_argument(
        "--files",
        default=",".join(REFERENCE),
        help="comma-separated; routellm and routerarena use the two-tier ladders in data/ladders",
    )
    ap.add_argument("--out", type=Path, default=Path("bundles/quality"))
    ap.add_argument(
        "--extra", default="", help='extra train flags, e.g. --extra="--seed 3 --no-center"'
    )
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples of the test prompts")
    a = ap.parse_args()
    rv = routeval()
    exe = str(Path(sys.executable).parent / "tier-router")
    rows = []
    for name in a.files.split(","):
        data = SHARED / "data" / f"{name}.jsonl.gz"
        bundle = a.out / f"{name}-{a.featurizer}"
        t = time.monotonic()
        run(
            [
                exe,
                "train",
                "--outcomes",
                str(data),
                "--tiers",
                str(REPO / "data/ladders" / f"{name}.toml"),
                "--out",
                str(bundle),
                "--featurizer",
                a.featurizer,
                "--no-mlflow",
                *a.extra.split(),
            ]
        )
        train_s = time.monotonic() - t
        scores = bundle.parent / f"{bundle.name}-scores.jsonl"
        run(
            [
                exe,
                "score",
                "--bundle",
                str(bundle),
                "--outcomes",
                str(data),
                "--split",
                "test",
                "--out",
                str(scores),
            ]
        )
        by_id = {}
        for line in scores.read_text().splitlines():
            r = json.loads(line)
            by_id[r["id"]] = list(r["p_pass"].values())
        models, prices = rv.LADDERS.get(name) or ladder_columns(name)
        tab = rv.load(str(data), models, prices)
        ids = [i for i, s in zip(tab.ids, tab.split, strict=True) if s]
        p = np.array([by_id[i] for i in ids])
        q, c = tab.q[tab.split], tab.c[tab.split]
        m = rv.metrics(p, q, c)
        test_rows, train_rows = np.where(tab.split)[0], np.where(~tab.split)[0]
        task_aware = task_rates(tab, train_rows, test_rows)
        task_ceiling = task_rates(tab, test_rows, test_rows)
        ref = REFERENCE.get(name, (float("nan"), float("nan")))
        sel = json.loads((bundle / "train_report.json").read_text()).get("model_selection", {})
        oof = {
            n: round(f.get("pgr_auc", float("nan")), 4)
            for n, f in sel.get("candidates", {}).items()
        }
        row = {
            "file": name,
            "featurizer": a.featurizer,
            "train_s": round(train_s, 1),
            "pgr_auc": round(m["pgr_auc"], 4),
            "cost_at_top": round(float(m["cost_at_top"]), 4),
            "cost_at_mid": round(float(m["cost_at_mid"]), 4),
            "best_q": round(m["best_q"], 4),
            "selected": sel.get("selected", ""),
            "oof_pgr_auc": oof,
            "ref_pgr_auc": ref[0],
            "ref_cost_at_mid": ref[1],
            "task_aware_pgr_auc": round(rv.metrics(task_aware, q, c)["pgr_auc"], 4),
            "task_test_rates_pgr_auc": round(rv.metrics(task_ceiling, q, c)["pgr_auc"], 4),
            **(paired_bootstrap(rv, p, task_aware, q, c, a.bootstrap) if a.bootstrap else {}),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n{'file':20s} {'pgr_auc':>8s} {'(ref)':>6s} {'c@mid':>6s} {'(ref)':>6s} "
        f"{'c@top':>6s} {'best_q':>7s} {'train s':>8s} {'task':>6s} {'task@test':>9s} "
        f"{'pgr_auc 95%':>13s} {'- task (95%)':>22s}"
    )
    for r in rows:
        print(
            f"{r['file']:20s} {r['pgr_auc']:8.3f} {r['ref_pgr_auc']:6.2f} {r['cost_at_mid']:6.3f} "
            f"{r['ref_cost_at_mid']:6.2f} {r['cost_at_top']:6.3f} {r['best_q']:7.3f} "
            f"{r['train_s']:8.1f} {r['task_aware_pgr_auc']:6.3f} "
            f"{r['task_test_rates_pgr_auc']:9.3f}"
            + (
                f" {r['pgr_auc_lo']:6.3f}-{r['pgr_auc_hi']:.3f} {r['vs_task_aware']:+7.3f} "
                f"[{r['vs_task_aware_lo']:+.3f}, {r['vs_task_aware_hi']:+.3f}]"
                if "pgr_auc_lo" in r
                else ""
            )
        )
    print("\nmodel selection: out-of-fold pgr_auc of each candidate on the train split")
    for r in rows:
        cands = ", ".join(f"{n} {v:.3f}" for n, v in r["oof_pgr_auc"].items())
        print(f"{r['file']:20s} selected {r['selected']:13s} ({cands})")


if __name__ == "__main__":
    main()
