"""Parity of the text-in ONNX graph (`tier-router export-onnx`) with Router.route().

    python benchmarks/onnx_parity.py --bundle B [--vocab-from F ...] [--files a,b] [--limit N]

Exports the bundle's graph (vocabulary from the --vocab-from files' train splits), then
routes every prompt of each data file in ../shared/data both ways and prints one
markdown row per file: prompts, same tier, |dP(pass)| <= 1e-3, largest |dP(pass)|,
and the share of the prompt's chunks the vocabulary lacks. Also the graph's latency
per prompt (batch of 1, single thread) beside route()'s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from outcomes import iter_outcomes
from router import Router
from training.text_graph import export_text_graph, open_text_graph, run_text_graph

DATA = Path(
    os.environ.get(
        "TIER_ROUTER_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)


def _compare(
    router: Router, session: object, prompts: list[str], test: np.ndarray
) -> dict[str, float]:
    py = np.array([list(router.route(t).p_pass.values()) for t in prompts], dtype=np.float32)
    py_tier = np.array([router.route(t).tier_index for t in prompts])
    graph, graph_tier = run_text_graph(session, prompts)
    diff = np.abs(graph - py).max(axis=1)
    same, close = graph_tier == py_tier, diff <= 1e-3
    return {
        "prompts": len(prompts),
        "same_tier": float(same.mean()),
        "p_within_1e-3": float(close.mean()),
        "max_abs_dp": float(diff.max()),
        "test_same_tier": float(same[test].mean()) if test.any() else float("nan"),
        "test_p_within_1e-3": float(close[test].mean()) if test.any() else float("nan"),
    }


def _latency(router: Router, session: object, prompts: list[str]) -> dict[str, float]:
    g, r = [], []
    for t in prompts:
        s = time.perf_counter_ns()
        run_text_graph(session, [t])
        g.append(time.perf_counter_ns() - s)
        s = time.perf_counter_ns()
        router.route(t)
        r.append(time.perf_counter_ns() - s)
    return {
        "graph_p50_us": round(float(np.median(g)) / 1e3, 1),
        "graph_p99_us": round(float(np.percentile(g, 99)) / 1e3, 1),
        "route_p50_us": round(float(np.median(r)) / 1e3, 1),
        "route_p99_us": round(float(np.percentile(r, 99)) / 1e3, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--vocab-from", action="append", default=[], type=Path)
    ap.add_argument("--files", default="", help="comma-separated data file stems (default: all)")
    ap.add_argument("--limit", type=int, default=0, help="at most N prompts per file (0: all)")
    ap.add_argument("--graph", type=Path, help="also keep the exported graph here")
    ap.add_argument(
        "--eval-file",
        default="",
        help="data file stem whose test split the bundle's ladder fits: report pgr_auc of "
        "route() and of the graph on it",
    )
    a = ap.parse_args()
    router = Router.load(a.bundle, threads=1)
    out = a.graph or Path(tempfile.mkdtemp()) / "router.onnx"
    vocab_texts = (r.prompt for f in a.vocab_from for r in iter_outcomes(f, "train", scores=False))
    info = export_text_graph(Path(a.bundle), out, vocab_texts, 200_000)
    session = open_text_graph(out)
    names = a.files.split(",") if a.files else sorted(p.name[:-9] for p in DATA.glob("*.jsonl.gz"))
    print(json.dumps(info))
    print(
        "| file | prompts | same tier | dP <= 1e-3 | max dP | test: same tier | test: dP <= 1e-3 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    sample: list[str] = []
    for name in names:
        recs = list(iter_outcomes(DATA / f"{name}.jsonl.gz", scores=False))
        if a.limit:
            recs = recs[:: max(1, len(recs) // a.limit)][: a.limit]
        prompts = [r.prompt for r in recs]
        sample.extend(prompts[:50])
        test = np.array([r.split == "test" for r in recs])
        r = _compare(router, session, prompts, test)
        print(
            f"| {name} | {r['prompts']} | {100 * r['same_tier']:.2f}% | "
            f"{100 * r['p_within_1e-3']:.2f}% | {r['max_abs_dp']:.2g} | "
            f"{100 * r['test_same_tier']:.2f}% | {100 * r['test_p_within_1e-3']:.2f}% |",
            flush=True,
        )
    if a.eval_file:
        print(json.dumps(_pgr_auc(router, session, DATA / f"{a.eval_file}.jsonl.gz")))
    print(json.dumps({"latency_batch1_single_thread": _latency(router, session, sample)}))


def _pgr_auc(router: Router, session: object, path: Path) -> dict[str, float]:
    """What the graph's approximations cost in pgr_auc on a test split."""
    from training.evaluate import curve_metrics
    from training.scoring import evaluate_bundle

    ev = evaluate_bundle(router, path, "test")
    graph_p, _ = run_text_graph(session, ev.prompts)
    python = ev.report["router"]["pgr_auc"]
    graph = curve_metrics(graph_p.astype(np.float64), ev.q, ev.c)["pgr_auc"]
    return {
        "file": path.name,
        "pgr_auc_route": python,
        "pgr_auc_graph": graph,
        "delta": graph - python,
    }


if __name__ == "__main__":
    main()
