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

from outcomes import OutcomesError
from router.bundle import BundleError
from router.ladder import LadderError
from router.policy import DEFAULT_GOAL
from tier_router.argtypes import (
    DefaultsHelpFormatter,
    add_bootstrap,
    add_bundle,
    add_max_train,
    add_renamed,
    add_tiers,
)
from tier_router.argtypes import existing_bundle as _bundle
from tier_router.argtypes import existing_file as _file
from tier_router.argtypes import int_list as _int_list
from tier_router.argtypes import nonneg_float as _non_negative_float
from tier_router.argtypes import out_file as _out_file
from tier_router.argtypes import positive_float as _positive_float
from tier_router.argtypes import positive_int as _positive_int
from tier_router.argtypes import rate as _rate
from training.finite_json import dumps
from training.registry import DEFAULT_REGISTERED_MODEL

log = logging.getLogger("tier_router")


# -- commands ----------------------------------------------------------------------------


def cmd_train(a: argparse.Namespace) -> int:
    from training.model import ModelConfig
    from training.pipeline import TrainConfig
    from training.runs import pick_registered_model, train_evaluate_log
    from training.selection import SelectionConfig
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
        selection=SelectionConfig(families=a.models),
        accurate_reference=a.accurate_reference,
    )
    registered, note = (None, None)
    if not a.no_mlflow:  # one registered model per ladder, settled before any work
        registered, note = pick_registered_model(a.tiers, a.registered_model)
        if note:
            log.warning("%s", note)
    try:
        summary = train_evaluate_log(
            cfg,
            eval_split=a.eval_split,
            mlflow=not a.no_mlflow,
            registered_model=registered,
            registered_note=note,
        )
    except TrackingError as e:
        print(f"tier-router train: error: {e}", file=sys.stderr)
        return 1
    print(dumps(summary, indent=2))
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
    if not text.strip():
        # The library routes an empty prompt (a service must not crash on one); a person
        # typing one has made a mistake.
        where = "stdin" if a.prompt == "-" else "the prompt argument"
        raise ValueError(f"{where} is empty or whitespace only; give the prompt text to route")
    router = Router.load(a.bundle)
    d = router.route(text)
    print(json.dumps({**d.to_dict(), "route_path": router.route_path}, indent=2))
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    from router import Router
    from training.replay import replay_file

    n, skipped = replay_file(Router.load(a.bundle), a.outcomes, a.split, a.out)
    if n == 0:
        print(
            f"tier-router replay: error: no prompt of split {a.split!r} in {a.outcomes} has a "
            "recorded answer for every tier",
            file=sys.stderr,
        )
        return 2
    log.info("replayed %d prompts (%d skipped: a tier's answer missing) to %s", n, skipped, a.out)
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from router import Router
    from training.scoring import evaluate_bundle, format_report, write_plot

    r = Router.load(a.bundle)
    ev = evaluate_bundle(r, a.outcomes, a.split, bootstrap=a.bootstrap)
    # The curve is opt-in: a report command leaves no files behind unless asked to.
    if a.plot is not None:
        write_plot(ev, r.ladder.names, a.plot, f"{a.outcomes.name} ({a.split}): cost vs quality")
    # The report for people on stderr; with --json the same numbers on stdout, as one
    # JSON document (stdout is always one document or nothing).
    print(format_report(ev.report), file=sys.stderr)
    if a.plot is not None:
        print(f"cost-quality curve: {a.plot}", file=sys.stderr)
    if a.json:
        print(dumps({**ev.report, "plot": None if a.plot is None else str(a.plot)}, indent=2))
    return 0


def cmd_policy(a: argparse.Namespace) -> int:
    from training.policy_refit import refit_policy

    r = refit_policy(a.bundle, a.goal, a.out, in_place=a.in_place)
    print(r.table, file=sys.stderr)
    print(
        f"goal {a.goal}: thresholds {list(r.thresholds)}, out-of-fold quality "
        f"{r.expected['validation_quality']:.3f} at {r.expected['validation_cost_vs_top']:.2f} "
        f"of always-top's cost"
        + ("" if r.expected["goal_met_on_validation"] else " (goal not met: always top)"),
        file=sys.stderr,
    )
    print(f"wrote bundle {r.router_version} to {r.bundle} in {r.seconds:.1f} s", file=sys.stderr)
    print(
        dumps(
            {
                "bundle": str(r.bundle),
                "router_version": r.router_version,
                "goal": a.goal,
                "thresholds": list(r.thresholds),
                "expected": r.expected,
                "elapsed_s": round(r.seconds, 2),
            },
            indent=2,
        )
    )
    return 0


def _add_policy_parser(sub: Any) -> None:
    pp = sub.add_parser(
        "policy", help="refit a bundle's thresholds to a new goal without retraining"
    )
    pp.add_argument("--bundle", type=_bundle, required=True, help="bundle directory")
    pp.add_argument("--goal", required=True, help="TIER[-POINTS], e.g. top, top-1, mid")
    where = pp.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="new bundle directory (must not exist)")
    where.add_argument("--in-place", action="store_true", help="replace the bundle (atomic rename)")
    pp.set_defaults(func=cmd_policy)


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tier-router",
        description="Learned router that picks the cheapest Claude tier on Bedrock likely to pass.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a router bundle from an outcomes file (train split)")
    t.add_argument("--outcomes", type=_file, required=True, help="outcomes JSONL(.gz)")
    add_tiers(t, "tier ladder TOML, cheapest first")
    t.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    t.add_argument(
        "--featurizer",
        choices=["fast", "accurate"],
        default="fast",
        help="fast: static embeddings + hand features (microseconds per route); "
        "accurate: adds the MiniLM encoder (milliseconds)",
    )
    t.add_argument(
        "--goal",
        default=DEFAULT_GOAL,
        help="quality goal of the routing and cascade policies: TIER[-POINTS], e.g. top, "
        "top-1 (at most one point below always-top), mid",
    )
    t.add_argument(
        "--clusters",
        type=_int_list,
        default=(32, 64, 128, 256),
        help="k-means granularities, comma-separated (default 32,64,128,256)",
    )
    t.add_argument(
        "--temperature",
        type=_positive_float,
        default=0.05,
        help="softness of the cluster memberships (lower: closer to hard k-means)",
    )
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
    t.add_argument(
        "--models",
        type=lambda v: tuple(x.strip() for x in v.split(",") if x.strip()),
        default=("logistic", "soft_cluster", "blend"),
        metavar="FAMILIES",
        help="candidate model families, comma-separated; the best out of fold is kept, the "
        "simplest within noise (default: logistic,soft_cluster,blend)",
    )
    t.add_argument(
        "--folds",
        type=_positive_int,
        default=5,
        help="cross-validation folds for the out-of-fold predictions the policy is set on",
    )
    add_max_train(t)
    t.add_argument(
        "--accurate-reference",
        action="store_true",
        help="with the fast featurizer, also report what the accurate one would give out of "
        "fold (a logistic regression on its MiniLM vectors, same folds; adds minutes)",
    )
    t.add_argument(
        "--seed", type=int, default=0, help="seeds sampling, folds and k-means (default 0)"
    )
    add_renamed(
        t,
        "--eval-split",
        default="test",
        help="held-out split to evaluate on after training (skipped if absent)",
    )
    t.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    t.add_argument(
        "--registered-model",
        default=None,
        help=f"MLflow registered model name ('' to skip registration; default "
        f"{DEFAULT_REGISTERED_MODEL}, or {DEFAULT_REGISTERED_MODEL}-<ladder>-<hash> when "
        f"{DEFAULT_REGISTERED_MODEL}'s versions route over another ladder: one model per "
        "ladder; a name whose versions use another ladder is refused)",
    )
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="write P(pass) per tier and the chosen tier per prompt")
    add_bundle(s)
    s.add_argument("--outcomes", type=_file, required=True, help="outcomes JSONL(.gz) to score")
    s.add_argument("--split", default="test", help="split to score ('all' for every prompt)")
    s.add_argument("--out", type=_out_file, required=True, help="scores JSONL to write")
    s.set_defaults(func=cmd_score)

    r = sub.add_parser("route", help="print the routing decision for one prompt")
    add_bundle(r)
    r.add_argument("prompt", help="prompt text, or - to read it from stdin")
    r.set_defaults(func=cmd_route)

    rp = sub.add_parser(
        "replay",
        help="replay the bundle's cascade over recorded answers (no scores read)",
        description="One JSON line per prompt and operating point: "
        '{"id", "point", "calls": [outcomes keys in call order], "final": key}; '
        "the point 'policy' is the bundle's own. Grade it with ../shared/tools/cascadeval.py.",
    )
    add_bundle(rp)
    rp.add_argument(
        "--outcomes", type=_file, required=True, help="outcomes JSONL(.gz) with answer texts"
    )
    rp.add_argument("--split", default="test", help="split to replay ('all' for every prompt)")
    rp.add_argument("--out", type=_out_file, required=True, help="replay JSONL to write")
    rp.set_defaults(func=cmd_replay)

    e = sub.add_parser("evaluate", help="cost-quality metrics of a bundle on an outcomes split")
    add_bundle(e)
    e.add_argument("--outcomes", type=_file, required=True, help="outcomes JSONL(.gz) with scores")
    e.add_argument("--split", default="test", help="split to evaluate ('all' for every prompt)")
    e.add_argument(
        "--plot",
        type=_out_file,
        default=None,
        metavar="P.png",
        help="also write the cost-quality curve to this PNG (none without it)",
    )
    e.add_argument(
        "--json",
        action="store_true",
        help="also print the full report as one JSON document on stdout (the table is on "
        "stderr; without --json stdout is empty)",
    )
    add_bootstrap(e, "the router's metrics (~5 s per 200 x 2k prompts)")
    e.set_defaults(func=cmd_evaluate)

    _add_policy_parser(sub)
    _register_optional(
        sub, "tier_router.serving_cli", "serve", ("local-bedrock", "demo", "feedback")
    )
    _register_optional(
        sub, "tier_router.registry_cli", "train", ("promote", "pull", "compare", "retrain")
    )
    _register_optional(sub, "tier_router.labeling_cli", "serve", ("label",))
    _register_optional(sub, "tier_router.batch_cli", "serve", ("batch",))
    _register_optional(sub, "tier_router.onnx_cli", "train", ("export-onnx",))
    _register_optional(sub, "tier_router.monitor_cli", "serve", ("monitor",))
    _register_optional(sub, "tier_router.table_cli", "train", ("table",))
    for command in sub.choices.values():  # subparsers do not inherit the formatter
        command.formatter_class = DefaultsHelpFormatter
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
        rc = int(a.func(a))
        sys.stdout.flush()  # a piped stdout is buffered: a closed reader shows up here
        return rc
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again; 1, as Python's docs advise.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (BundleError, LadderError, OutcomesError, ValueError, FileExistsError) as e:
        print(f"tier-router {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tier-router {a.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
