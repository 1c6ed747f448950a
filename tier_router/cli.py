"""`tier-router` console script: argument parsing and validation; work lives in packages.

Heavy imports (scikit-learn, MLflow, boto3) happen inside the command that needs them,
so `tier-router route` starts fast and works with the runtime-only install.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from router.bundle import BundleError
from router.ladder import LadderError
from router.outcomes import OutcomesError
from tier_router.argtypes import add_bootstrap
from tier_router.argtypes import existing_bundle as _bundle
from tier_router.argtypes import existing_file as _file
from tier_router.argtypes import int_list as _int_list
from tier_router.argtypes import nonneg_float as _non_negative_float
from tier_router.argtypes import out_file as _out_file
from tier_router.argtypes import positive_float as _positive_float
from tier_router.argtypes import positive_int as _positive_int
from tier_router.argtypes import rate as _rate

log = logging.getLogger("tier_router")


# -- commands ----------------------------------------------------------------------------


def cmd_train(a: argparse.Namespace) -> int:
    from training.model import ModelConfig
    from training.pipeline import TrainConfig
    from training.runs import train_evaluate_log
    from training.tracking import TrackingError

    cfg = TrainConfig(
        outcomes=a.outcomes,
        tiers=a.tiers,
        out=a.out,
        featurizer=a.featurizer,
        goal=a.goal,
        model=ModelConfig(
            n_clusters=a.clusters,
            temperature=a.temperature,
            hand_weight=a.hand_weight,
            center=a.center,
            task_weight=a.task_weight,
            seed=a.seed,
        ),
        folds=a.folds,
        max_train=a.max_train,
        seed=a.seed,
    )
    try:
        summary = train_evaluate_log(
            cfg,
            eval_split=a.eval_split,
            mlflow=not a.no_mlflow,
            registered_model=a.registered_model,
        )
    except TrackingError as e:
        print(f"tier-router train: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from router import Router
    from training.scoring import score_file

    n = score_file(Router.load(a.bundle), a.outcomes, a.split, a.out)
    log.info("wrote %d scores to %s", n, a.out)
    return 0


def cmd_route(a: argparse.Namespace) -> int:
    from router import Router

    text = sys.stdin.read() if a.prompt == "-" else a.prompt
    d = Router.load(a.bundle).route(text)
    print(json.dumps(d.to_dict(), indent=2))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from router import Router
    from training.scoring import evaluate_bundle, format_report, write_plot

    r = Router.load(a.bundle)
    ev = evaluate_bundle(r, a.outcomes, a.split, bootstrap=a.bootstrap)
    plot = a.plot or Path(f"curve-{a.outcomes.name.split('.')[0]}-{a.split}.png")
    write_plot(ev, r.ladder.names, plot, f"{a.outcomes.name} ({a.split}): cost vs quality")
    if a.json:
        print(json.dumps({**ev.report, "plot": str(plot)}, indent=2))
    else:
        print(format_report(ev.report))
        print(f"cost-quality curve: {plot}")
    return 0


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tier-router",
        description="Learned router that picks the cheapest Claude tier on Bedrock likely to pass.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a router bundle from an outcomes file (train split)")
    t.add_argument("--outcomes", type=_file, required=True, help="outcomes JSONL(.gz)")
    t.add_argument("--tiers", type=_file, required=True, help="tier ladder TOML, cheapest first")
    t.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    t.add_argument("--featurizer", choices=["fast", "accurate"], default="fast")
    t.add_argument(
        "--goal",
        default="top",
        help="quality goal for the policy: TIER[-POINTS], e.g. top, top-1, mid",
    )
    t.add_argument(
        "--clusters",
        type=_int_list,
        default=(32, 64, 128, 256),
        help="k-means granularities, comma-separated (default 32,64,128,256)",
    )
    t.add_argument("--temperature", type=_positive_float, default=0.05)
    t.add_argument(
        "--hand-weight",
        type=_non_negative_float,
        default=0.2,
        help="weight of the standardized hand features in the clustering space (0 = off)",
    )
    t.add_argument(
        "--no-center",
        dest="center",
        action="store_false",
        help="leave static embeddings uncentred (see router/joint_space.py)",
    )
    t.add_argument(
        "--task-weight",
        type=_rate,
        default=0.5,
        help="share of P(pass) from the category head, learned from the outcomes' task "
        "field as a training label (0 = off; default 0.5; off when the file has no tasks)",
    )
    t.add_argument("--folds", type=_positive_int, default=5)
    t.add_argument(
        "--max-train",
        type=_positive_int,
        default=None,
        help="use at most N training prompts (sampled)",
    )
    t.add_argument(
        "--seed", type=int, default=0, help="seeds sampling, folds and k-means (default 0)"
    )
    t.add_argument(
        "--eval-split",
        default="test",
        help="split to evaluate on after training (skipped if absent)",
    )
    t.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    t.add_argument(
        "--registered-model",
        default="tier-router",
        help="MLflow registered model name ('' to skip registration)",
    )
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="write P(pass) per tier and the chosen tier per prompt")
    s.add_argument("--bundle", type=_bundle, required=True)
    s.add_argument("--outcomes", type=_file, required=True)
    s.add_argument("--split", default="test", help="split to score ('all' for every prompt)")
    s.add_argument("--out", type=_out_file, required=True)
    s.set_defaults(func=cmd_score)

    r = sub.add_parser("route", help="print the routing decision for one prompt")
    r.add_argument("--bundle", type=_bundle, required=True)
    r.add_argument("prompt", help="prompt text, or - to read it from stdin")
    r.set_defaults(func=cmd_route)

    e = sub.add_parser("evaluate", help="cost-quality metrics of a bundle on an outcomes split")
    e.add_argument("--bundle", type=_bundle, required=True)
    e.add_argument("--outcomes", type=_file, required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--plot", type=_out_file, default=None, help="PNG path for the curve")
    e.add_argument("--json", action="store_true", help="print the full report as JSON")
    add_bootstrap(e, "the router's metrics (~5 s per 200 x 2k prompts)")
    e.set_defaults(func=cmd_evaluate)

    _register_optional(sub, "serving.cli", "serve", ("local-bedrock", "demo", "feedback"))
    _register_optional(
        sub, "training.registry_cli", "train", ("promote", "pull", "compare", "retrain")
    )
    _register_optional(sub, "labeling.cli", "serve", ("label",))
    return p


def _register_optional(sub: Any, module: str, extra: str, names: tuple[str, ...]) -> None:
    """Commands of an optional extra; without it they explain how to get it."""
    import importlib

    try:
        register = importlib.import_module(module).register
    except ImportError as e:
        missing = str(e)

        def need_extra(a: argparse.Namespace) -> int:
            print(
                f"tier-router: this command needs the {extra} extra ({missing}); "
                f"pip install 'tier-router[{extra}]'",
                file=sys.stderr,
            )
            return 2

        for name in names:
            sp = sub.add_parser(name, help=f"{name} (needs tier-router[{extra}])")
            sp.set_defaults(func=need_extra)
        return
    register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if getattr(a, "split", None) == "all":
        a.split = None
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "botocore", "httpx", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(a.func(a))
    except (BundleError, LadderError, OutcomesError, ValueError, FileExistsError) as e:
        print(f"tier-router {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tier-router {a.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
