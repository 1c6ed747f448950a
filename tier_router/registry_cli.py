"""`tier-router promote | pull | compare | retrain`: argument parsing, validation, output.

Wire into the console script with `register(subparsers)`. Handlers return 0 on success,
1 when `promote` refuses a worse candidate, and 2 (with a message naming the flag or
the registry object) for bad input or an unreachable/unknown registry entry.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.policy import DEFAULT_GOAL
from tier_router.argtypes import (
    add_bootstrap,
    add_grades,
    add_logs,
    add_max_train,
    add_renamed,
    add_tiers,
    parse_as,
)
from tier_router.argtypes import existing_file as _file
from tier_router.argtypes import int_list as _int_list
from tier_router.argtypes import out_dir as _out_dir
from tier_router.argtypes import out_file as _out_file
from tier_router.argtypes import positive_int as _positive_int
from tier_router.argtypes import rate as _rate
from tier_router.registry_output import add_json as _add_json
from tier_router.registry_output import eval_doc as _eval_doc
from tier_router.registry_output import json_out as _json_out
from tier_router.registry_output import paired_doc as _paired_doc
from tier_router.registry_output import say as _err

log = logging.getLogger("tier_router.registry")
Handler = Callable[[argparse.Namespace], int]


def _version(value: str) -> str:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a version number like 3, got {value!r}")
    return str(int(value))


def _versions(value: str) -> tuple[str, ...]:
    return tuple(_version(v.strip()) for v in value.split(",") if v.strip())


def _tolerance(value: str) -> float:
    v = parse_as(float, value, "a number >= 0")
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return v


def _max_drop(a: argparse.Namespace) -> float:
    from training.compare import DEFAULT_MAX_QUALITY_DROP

    return DEFAULT_MAX_QUALITY_DROP if a.max_quality_drop is None else float(a.max_quality_drop)


def _add_max_quality_drop(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-quality-drop",
        type=_rate,
        default=None,
        help="how much lower the candidate's own policy quality may be than the champion's "
        "on the same split, in quality points on [0, 1] (default 0.005, half a point)",
    )


def _guarded(name: str, fn: Handler) -> Handler:
    """Registry and input errors become one line on stderr and exit 2, not a traceback."""

    @functools.wraps(fn)
    def run(a: argparse.Namespace) -> int:
        from mlflow.exceptions import MlflowException

        from outcomes import OutcomesError
        from router.bundle import BundleError

        try:
            return fn(a)
        except (ValueError, BundleError, OutcomesError, FileExistsError) as e:
            msg = str(e)
        except MlflowException as e:
            msg = f"MLflow: {e.message}"
        print(f"tier-router {name}: error: {msg}", file=sys.stderr)
        return 2

    return run


def _eval_data(a: argparse.Namespace, c: Any, run_id: str | None) -> Any:
    from training.compare import EvalData, default_eval_data

    if a.outcomes is not None:
        return EvalData(a.outcomes, a.split)
    return default_eval_data(c, run_id)


# -- handlers ------------------------------------------------------------------------------


def cmd_promote(a: argparse.Namespace) -> int:
    from router.bundle import BundleError
    from training.compare import evaluate_version, format_table, judge, paired
    from training.registry import (
        LadderMismatch,
        ModelRef,
        RegistryError,
        champion,
        check_same_ladder,
        client,
        resolve,
        set_champion,
    )

    c = client()
    cand = resolve(c, ModelRef(a.model, version=a.version))
    champ = champion(c, a.model)
    doc: dict[str, Any] = {
        "model": a.model,
        "version": str(cand.version),
        "champion_before": None if champ is None else str(champ.version),
        "promoted": False,
        "forced": False,
        "compared": False,
        "verdict": None,
        "refused": None,
    }
    if champ is None:
        set_champion(c, a.model, cand.version)
        _err(f"{a.model}: no champion yet; version {cand.version} is now champion")
        return _json_out(a, {**doc, "promoted": True}, 0)
    if str(champ.version) == str(cand.version):
        _err(f"{a.model}: version {cand.version} already is the champion")
        return _json_out(a, doc, 0)
    try:
        check_same_ladder(c, [champ, cand])
    except LadderMismatch as e:
        if not a.force:
            msg = (
                f"champion {e}; pass --force to make version {cand.version} champion without "
                f"a comparison (a service pulling {a.model}@champion then routes over the "
                "other ladder)"
            )
            _err(f"tier-router promote: refused: {msg}")
            return _json_out(a, {**doc, "refused": msg}, 1)
        return _move_champion(a, c, doc, champ.version, " (forced, other ladder)")
    data = _eval_data(a, c, champ.run_id)
    ca = evaluate_version(c, cand, data)
    try:
        ch = evaluate_version(c, champ, data)
    except (BundleError, RegistryError) as e:  # e.g. an older bundle format: no comparison
        if not a.force:
            msg = (
                f"champion version {champ.version} cannot be compared ({e}); pass --force to "
                f"promote version {cand.version} without the comparison"
            )
            _err(f"tier-router promote: refused: {msg}")
            return _json_out(a, {**doc, "refused": msg}, 1)
        _err(f"champion version {champ.version} not compared: {e}")
        return _move_champion(a, c, doc, champ.version, " (forced, not compared)")
    _err(format_table([ch, ca], data))
    verdict = judge(ca, ch, a.tolerance, _max_drop(a))
    _err(verdict.explain())
    doc.update(
        compared=True,
        outcomes=str(data.outcomes),
        split=data.split,
        champion=_eval_doc(ch),
        candidate=_eval_doc(ca),
        verdict={"ok": verdict.ok, "reasons": list(verdict.reasons)},
    )
    noise = ""
    envelope_loss = any(not r.startswith("its policy") for r in verdict.reasons)
    if a.bootstrap:
        pr = paired(ca, ch, a.bootstrap)
        doc["paired"] = _paired_doc(pr)
        _err(pr.explain(ch.report["n"]))
        if envelope_loss and pr.reading("pgr_auc") == "within noise":
            d = pr.diffs["pgr_auc"]
            noise = (
                f" (its pgr_auc difference, {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}], "
                "is within this split's noise; --tolerance sets how much loss to accept)"
            )
    if not verdict.ok and not a.force:
        msg = (
            f"version {cand.version} is worse than champion version {champ.version} on "
            f"{data.outcomes.name} ({data.split}){noise}; pass --force to promote anyway"
        )
        _err(f"tier-router promote: refused: {msg}")
        return _json_out(a, {**doc, "refused": msg}, 1)
    forced = " (forced)" if not verdict.ok else ""
    return _move_champion(a, c, doc, champ.version, forced)


def _move_champion(
    a: argparse.Namespace, c: Any, doc: dict[str, Any], old: object, note: str
) -> int:
    from training.registry import set_champion

    model, new = a.model, doc["version"]
    set_champion(c, model, str(new))
    c.set_model_version_tag(model, str(new), "promoted_over", str(old))
    _err(f"{model}: champion moved from version {old} to {new}{note}")
    return _json_out(a, {**doc, "promoted": True, "forced": bool(note)}, 0)


def cmd_pull(a: argparse.Namespace) -> int:
    from router import Router
    from training.registry import ModelRef, pull

    got = pull(ModelRef.parse(a.model), a.out)
    router = Router.load(got.path)  # the same check a service's load will do
    print(
        json.dumps(
            {
                "path": str(got.path),
                "model": got.name,
                "version": got.version,
                "run_id": got.run_id,
                "router_version": got.router_version,
                "tiers": router.ladder.names,
            },
            indent=2,
        )
    )
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from training.compare import (
        check_comparable,
        evaluate_version,
        format_table,
        log_comparison,
        paired,
        plot_overlay,
    )
    from training.registry import champion, check_same_ladder, client, list_versions

    c = client()
    versions = list_versions(c, a.model)
    if a.versions:
        by_v = {str(v.version): v for v in versions}
        missing = [v for v in a.versions if v not in by_v]
        if missing:
            raise ValueError(f"--versions: {a.model} has no version(s) {missing}")
        versions = [by_v[v] for v in a.versions]
    if len(versions) > a.limit:
        versions = versions[-a.limit :]
    ref = champion(c, a.model) or versions[-1]
    check_same_ladder(c, [ref, *versions])  # before any download or scoring
    data = _eval_data(a, c, ref.run_id)
    evals = [evaluate_version(c, v, data) for v in versions]
    check_comparable(evals)
    _err(format_table(evals, data))
    pairs = []
    if a.bootstrap and len(evals) > 1:
        base = next((e for e in evals if e.version == str(ref.version)), evals[0])
        pairs = [paired(e, base, a.bootstrap) for e in evals if e is not base]
        for pr in pairs:
            _err(pr.explain(base.report["n"]))
    doc: dict[str, Any] = {
        "model": a.model,
        "outcomes": str(data.outcomes),
        "split": data.split,
        "reference": str(ref.version),
        "versions": [_eval_doc(e) for e in evals],
        "paired": [_paired_doc(pr) for pr in pairs],
        "png": None if a.png is None else str(a.png),
        "run_id": None,
    }
    # The overlay goes where --png says; without it, only into the comparison run (a
    # report command leaves no file in the working directory unless asked to).
    with tempfile.TemporaryDirectory(prefix="tier-router-compare-") as tmp:
        png = a.png or Path(tmp) / f"compare-{a.model}.png"
        if a.png is not None or not a.no_log:
            plot_overlay(evals, png, f"{a.model} on {data.outcomes.name} ({data.split})")
        if a.png is not None:
            _err(f"overlay of cost-quality curves: {png}")
        if not a.no_log:
            doc["run_id"] = log_comparison(evals, data, png, a.model, pairs)
            _err(f"logged comparison run {doc['run_id']} (overlay in its plots/)")
    return _json_out(a, doc, 0)


def cmd_retrain(a: argparse.Namespace) -> int:
    from training.compare import EvalData, format_table, paired
    from training.model import ModelConfig
    from training.pipeline import TrainConfig
    from training.registry import client, set_champion
    from training.retrain import RetrainConfig, retrain
    from training.runs import pick_registered_model

    out = a.out or Path(tempfile.mkdtemp(prefix="tier-router-challenger-")) / "bundle"
    cfg = RetrainConfig(
        base=a.outcomes,
        feedback=tuple(a.log or ()),
        tiers=a.tiers,
        out=out,
        eval_split=a.eval_split,
        label_rule=a.label_rule,
        table=a.table,
        table_rows=a.table_rows,
        grades=tuple(a.grades or ()),
    )
    tcfg = TrainConfig(
        outcomes=a.outcomes,
        tiers=a.tiers,
        out=out,
        featurizer=a.featurizer,
        goal=a.goal,
        # No --clusters: the model's own default granularities, as `train` uses.
        model=ModelConfig() if a.clusters is None else ModelConfig(n_clusters=a.clusters),
        folds=a.folds,
        max_train=a.max_train,
        seed=a.seed,
    )
    model, note = pick_registered_model(a.tiers, a.model)  # one registered model per ladder
    if note:
        log.warning("%s", note)
    res = retrain(cfg, tcfg, model, _max_drop(a), registered_note=note)
    doc: dict[str, Any] = {
        "merged_outcomes": str(res.merged),
        "bundle": str(out),
        "feedback": res.stats.to_dict(),
        "mlflow": res.summary.get("mlflow"),
        "challenger": _eval_doc(res.challenger),
        "champion": None if res.champion is None else _eval_doc(res.champion),
        "champion_error": res.champion_error,
        "verdict": None,
        "promoted": False,
    }
    # Tables and explanations for people on stderr; stdout is the one JSON document.
    evals = [e for e in (res.champion, res.challenger) if e is not None]
    _err(format_table(evals, EvalData(a.outcomes, a.eval_split)))
    if res.verdict is None:
        _err(res.champion_error or "no champion to compare with")
        if a.promote and res.champion_error:
            _err("challenger not promoted: promote it with `tier-router promote --force`")
        print(json.dumps(doc, indent=2))
        return 0
    doc["verdict"] = {"ok": res.verdict.ok, "reasons": list(res.verdict.reasons)}
    _err(res.verdict.explain())
    if a.bootstrap and res.champion is not None:
        pr = paired(res.challenger, res.champion, a.bootstrap)
        doc["paired"] = _paired_doc(pr)
        _err(pr.explain(res.champion.report["n"]))
    version = res.challenger.version
    if a.promote and res.verdict.ok and version and model:
        set_champion(client(), model, version)
        doc["promoted"] = True
        _err(f"{model}: challenger version {version} promoted to champion")
    elif a.promote:
        _err("challenger not promoted: it is worse than the champion on this data")
    print(json.dumps(doc, indent=2))
    return 0


# -- parser --------------------------------------------------------------------------------


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--outcomes",
        type=_file,
        default=None,
        help="outcomes file to score every version on (default: the reference run's training file)",
    )
    p.add_argument("--split", default="test", help="split of --outcomes to score (default test)")
    add_bootstrap(p, "each version's paired difference to the champion")


def register(subparsers: Any) -> None:
    """Add promote, pull, compare and retrain to the `tier-router` subparsers."""
    from training.registry import DEFAULT_REGISTERED_MODEL

    p = subparsers.add_parser(
        "promote", help="move the champion alias to a version (refuses a worse one unless --force)"
    )
    p.add_argument("--model", default=DEFAULT_REGISTERED_MODEL, help="registered model name")
    p.add_argument("--version", type=_version, required=True, help="version to promote")
    _eval_args(p)
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        default=0.0,
        help="allowed loss in quality points / cost fraction (default 0)",
    )
    _add_max_quality_drop(p)
    p.add_argument("--force", action="store_true", help="promote even if worse")
    _add_json(p)
    p.set_defaults(func=_guarded("promote", cmd_promote))

    q = subparsers.add_parser("pull", help="download a registered version's bundle")
    q.add_argument(
        "--model",
        default=f"{DEFAULT_REGISTERED_MODEL}@champion",
        help="NAME@ALIAS, NAME/VERSION or NAME (latest); default tier-router@champion",
    )
    q.add_argument("--out", type=_out_dir, required=True, help="bundle directory to write")
    q.set_defaults(func=_guarded("pull", cmd_pull))

    c = subparsers.add_parser("compare", help="registered versions side by side on one split")
    c.add_argument("--model", default=DEFAULT_REGISTERED_MODEL, help="registered model name")
    c.add_argument(
        "--versions",
        type=_versions,
        default=(),
        help="comma-separated versions (default: all, newest --limit)",
    )
    c.add_argument(
        "--limit", type=_positive_int, default=8, help="compare at most N newest versions"
    )
    _eval_args(c)
    c.add_argument(
        "--png",
        type=_out_file,
        default=None,
        help="also write the overlay PNG here (without it, it is only logged with the run)",
    )
    c.add_argument("--no-log", action="store_true", help="do not log a comparison run")
    _add_json(c)
    c.set_defaults(func=_guarded("compare", cmd_compare))

    r = subparsers.add_parser(
        "retrain",
        help="train a challenger from base outcomes plus "
        "serving outcome logs and judge it against the champion",
    )
    r.add_argument("--outcomes", type=_file, required=True, help="base outcomes file")
    add_logs(
        r,
        "--feedback",
        required=False,
        help="serving outcome log(s), plain or gzipped JSONL, or s3://bucket/prefix/ (or give "
        "--table)",
    )
    add_grades(r)
    r.add_argument(
        "--table",
        default=None,
        help="training table from `tier-router table` (a .parquet file, directory or "
        "s3://bucket/prefix/) instead of --log; sampled to --table-rows",
    )
    r.add_argument(
        "--table-rows",
        type=_positive_int,
        default=500_000,
        help="memory budget of --table in rows (~1.2 kB each): a larger table is "
        "sampled, stratified by label pattern (docs/scale.md)",
    )
    add_tiers(r)
    r.add_argument("--out", type=_out_dir, default=None, help="challenger bundle directory")
    r.add_argument(
        "--featurizer", choices=["fast", "accurate"], default="fast", help="as for train"
    )
    r.add_argument("--goal", default=DEFAULT_GOAL, help="policy quality goal, as for train")
    r.add_argument(
        "--clusters",
        type=_int_list,
        default=None,
        help="k-means granularities, comma-separated (default: the model's)",
    )
    r.add_argument("--folds", type=_positive_int, default=5, help="cross-validation folds")
    add_max_train(r)
    r.add_argument("--seed", type=int, default=0, help="seeds sampling, folds and k-means")
    add_renamed(
        r,
        "--eval-split",
        "--split",
        default="test",
        help="held-out split of --outcomes: kept out of the labels, both versions scored on it "
        "(as train's --eval-split; --split: the old name, deprecated)",
    )
    r.add_argument(
        "--label-rule",
        choices=["first-attempt", "all-tried"],
        default="first-attempt",
        help="which logged labels to train on",
    )
    r.add_argument(
        "--model",
        default=None,
        help=f"registered model ('' to skip registration and the champion check; default "
        f"{DEFAULT_REGISTERED_MODEL}, or the model train derived for this ladder)",
    )
    r.add_argument(
        "--promote", action="store_true", help="make the challenger champion if it is not worse"
    )
    _add_max_quality_drop(r)
    add_bootstrap(r, "the challenger's paired difference to the champion")
    r.set_defaults(func=_guarded("retrain", cmd_retrain))


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (tests, before the commands are wired into `tier-router`)."""
    parser = argparse.ArgumentParser(prog="tier-router")
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("mlflow", "alembic", "urllib3", "botocore", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
