"""The MLflow loop on real data: champion -> serve -> log -> retrain -> challenger vs champion.

1. Split a real outcomes file's train split into `base` (kept as split "train") and
   `serve` (the traffic the champion will see); the test split is untouched.
2. Train the champion on base, register it, give it the `champion` alias.
3. Pull the champion from the registry and serve the `serve` prompts through the
   offline demo (tiered client -> local Bedrock -> outcome log).
4. Retrain from base + the outcome log (only labels serving observed) and score
   champion and challenger on the same test split.
5. Controls: the same retrain with every tried label (`all-tried`), and with the served
   prompts' full recorded labels (what a perfect log would give).

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 .venv/bin/python benchmarks/mlflow_loop.py \\
        --outcomes ../shared/data/routerbench_subset.jsonl.gz \\
        --tiers data/ladders/routerbench_subset.toml --work /tmp/loop
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from outcomes import OutcomeRecord, read_outcomes, write_outcomes  # noqa: E402
from router import Router  # noqa: E402
from training.compare import EvalData, VersionEval, evaluate_router, format_table  # noqa: E402
from training.model import ModelConfig  # noqa: E402
from training.pipeline import TrainConfig  # noqa: E402
from training.registry import ModelRef, client, pull, set_champion  # noqa: E402
from training.retrain import RetrainConfig, retrain  # noqa: E402
from training.runs import train_evaluate_log  # noqa: E402

log = logging.getLogger("mlflow_loop")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    outcomes: Path
    tiers: Path
    work: Path
    model: str = "tier-router-loop"
    base_fraction: float = 0.5
    serve_requests: int = 1000
    goal: str = "top"
    clusters: tuple[int, ...] | None = None  # None: ModelConfig's default
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.05 <= self.base_fraction <= 0.95:
            raise ValueError(f"--base-fraction must be in [0.05, 0.95], got {self.base_fraction}")
        for flag, p in (("--outcomes", self.outcomes), ("--tiers", self.tiers)):
            if not p.is_file():
                raise ValueError(f"{flag}: no such file: {p}")


def split_file(cfg: LoopConfig) -> tuple[Path, int, int, int]:
    """Write the loop's outcomes file: base rows 'train', served rows 'serve', test as is."""
    recs = read_outcomes(cfg.outcomes)
    train = [r for r in recs if r.split in ("train", None)]
    test = [r for r in recs if r.split == "test"]
    rng = np.random.default_rng(cfg.seed)
    is_base = np.zeros(len(train), dtype=bool)
    is_base[rng.permutation(len(train))[: round(cfg.base_fraction * len(train))]] = True
    rows: list[OutcomeRecord] = [
        dataclasses.replace(r, split="train" if b else "serve")
        for r, b in zip(train, is_base, strict=True)
    ] + test
    out = cfg.work / "loop-outcomes.jsonl.gz"
    write_outcomes(out, rows)
    return out, int(is_base.sum()), int((~is_base).sum()), len(test)


def full_label_file(loop_file: Path, dest: Path) -> Path:
    """Control: served prompts with every tier's recorded result, as extra training rows."""
    rows = [dataclasses.replace(r, split="train") if r.split == "serve" else r
            for r in read_outcomes(loop_file)]
    write_outcomes(dest, rows)
    return dest


def _row(e: VersionEval) -> dict[str, Any]:
    pol = e.report["policy"]
    return {
        "label": e.label, "version": e.version, "router_version": e.router_version,
        **{k: round(float(e.report["router"][k]), 4)
           for k in ("pgr_auc", "cost_at_top", "cost_at_mid", "best_q")},
        "policy_quality": round(float(pol["quality"]), 4),
        "policy_cost_usd": float(f"{pol['cost']:.6g}"),
        "policy_cost_vs_top": round(float(pol["cost_vs_top"]), 4),
    }


def run(cfg: LoopConfig) -> dict[str, Any]:
    from serving.demo import DemoConfig, run_demo

    t0 = time.monotonic()
    cfg.work.mkdir(parents=True, exist_ok=True)
    loop_file, n_base, n_serve, n_test = split_file(cfg)
    log.info("base %d / serve %d / test %d prompts -> %s", n_base, n_serve, n_test, loop_file)
    model_cfg = ModelConfig(n_clusters=cfg.clusters) if cfg.clusters else ModelConfig()
    tcfg = TrainConfig(outcomes=loop_file, tiers=cfg.tiers, out=cfg.work / "champion-trained",
                       goal=cfg.goal, model=model_cfg, folds=cfg.folds, seed=cfg.seed)
    champ_sum = train_evaluate_log(tcfg, registered_model=cfg.model)
    champ_version = champ_sum["mlflow"]["registered_version"]
    c = client()
    set_champion(c, cfg.model, champ_version)

    pulled = pull(ModelRef(cfg.model, alias="champion"), cfg.work / "champion", c)
    serve_log = cfg.work / "serving-outcomes.jsonl"
    serve_log.unlink(missing_ok=True)
    with open(os.devnull, "w") as quiet:
        demo = run_demo(DemoConfig(bundle=str(pulled.path), outcomes=str(loop_file),
                                   log=str(serve_log), split="serve",
                                   requests=cfg.serve_requests, seed=cfg.seed),
                        Router.load(pulled.path), progress=quiet)
    log.info("demo: %s", json.dumps(demo))

    data = EvalData(loop_file, "test")
    results: dict[str, Any] = {}
    rows: list[VersionEval] = []
    for rule in ("first-attempt", "all-tried"):
        rcfg = RetrainConfig(base=loop_file, feedback=(serve_log,), tiers=cfg.tiers,
                             out=cfg.work / f"challenger-{rule}", label_rule=rule)
        res = retrain(rcfg, tcfg, cfg.model if rule == "first-attempt" else None)
        results[rule] = {"feedback": res.stats.to_dict(), "mlflow": res.summary.get("mlflow"),
                         "verdict": dataclasses.asdict(res.verdict) if res.verdict else None}
        if rule == "first-attempt":
            assert res.champion is not None
            rows.append(dataclasses.replace(res.champion, label=f"champion v{champ_version}"))
        rows.append(dataclasses.replace(res.challenger, label=f"retrain {rule}"))

    control_file = full_label_file(loop_file, cfg.work / "control-outcomes.jsonl.gz")
    ctl = train_evaluate_log(dataclasses.replace(tcfg, outcomes=control_file,
                                                 out=cfg.work / "control-full-labels"),
                             registered_model=None, extra_tags={"kind": "control"})
    rows.append(evaluate_router(Router.load(ctl["bundle"]), data, "full labels"))

    table = format_table(rows, data)
    report = {
        "outcomes": str(cfg.outcomes), "tiers": str(cfg.tiers), "model": cfg.model,
        "prompts": {"base": n_base, "serve": n_serve, "test": n_test},
        "demo": demo, "retrain": results, "test_metrics": [_row(e) for e in rows],
        "seconds": round(time.monotonic() - t0, 1),
    }
    (cfg.work / "loop_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table)
    print(json.dumps({k: report[k] for k in ("prompts", "test_metrics", "seconds")}, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--outcomes", type=Path,
                   default=REPO.parent / "shared" / "data" / "routerbench_subset.jsonl.gz")
    p.add_argument("--tiers", type=Path, default=REPO / "data" / "ladders" /
                   "routerbench_subset.toml")
    p.add_argument("--work", type=Path, required=True, help="directory for bundles and logs")
    p.add_argument("--model", default="tier-router-loop", help="registered model name")
    p.add_argument("--base-fraction", type=float, default=0.5)
    p.add_argument("--serve-requests", type=int, default=1000)
    p.add_argument("--goal", default="top")
    p.add_argument("--clusters", default="", help="k-means sizes (default: the model's)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("mlflow", "alembic", "urllib3", "botocore", "httpx", "training"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = LoopConfig(a.outcomes, a.tiers, a.work, a.model, a.base_fraction,
                         a.serve_requests, a.goal,
                         tuple(int(x) for x in a.clusters.split(",")) if a.clusters else None,
                         a.folds, a.seed)
    except ValueError as e:
        print(f"mlflow_loop: error: {e}", file=sys.stderr)
        return 2
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
