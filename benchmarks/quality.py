"""Router quality on the public files, judged by the shared outside check (routeval).

    python benchmarks/quality.py --featurizer fast [--files mmlu_pro,routerbench_subset,...]

For each file: `tier-router train` on its train split (ladder from data/ladders), then
`tier-router score --split test`, then ../shared/tools/routeval.py's metrics on those
scores. Prints one JSON line per file and a table; training time is reported too.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--featurizer", choices=["fast", "accurate"], default="fast")
    ap.add_argument("--files", default=",".join(REFERENCE))
    ap.add_argument("--out", type=Path, default=Path("bundles/quality"))
    ap.add_argument("--extra", default="", help="extra train flags, space-separated")
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
        models, prices = rv.LADDERS[name]
        tab = rv.load(str(data), models, prices)
        ids = [i for i, s in zip(tab.ids, tab.split, strict=True) if s]
        p = np.array([by_id[i] for i in ids])
        m = rv.metrics(p, tab.q[tab.split], tab.c[tab.split])
        ref = REFERENCE.get(name, (float("nan"), float("nan")))
        row = {
            "file": name,
            "featurizer": a.featurizer,
            "train_s": round(train_s, 1),
            "pgr_auc": round(m["pgr_auc"], 4),
            "cost_at_top": round(float(m["cost_at_top"]), 4),
            "cost_at_mid": round(float(m["cost_at_mid"]), 4),
            "best_q": round(m["best_q"], 4),
            "ref_pgr_auc": ref[0],
            "ref_cost_at_mid": ref[1],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n{'file':20s} {'pgr_auc':>8s} {'(ref)':>6s} {'c@mid':>6s} {'(ref)':>6s} "
        f"{'c@top':>6s} {'best_q':>7s} {'train s':>8s}"
    )
    for r in rows:
        print(
            f"{r['file']:20s} {r['pgr_auc']:8.3f} {r['ref_pgr_auc']:6.2f} {r['cost_at_mid']:6.3f} "
            f"{r['ref_cost_at_mid']:6.2f} {r['cost_at_top']:6.3f} {r['best_q']:7.3f} "
            f"{r['train_s']:8.1f}"
        )


if __name__ == "__main__":
    main()
