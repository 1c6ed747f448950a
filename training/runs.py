"""One training run end to end: train, evaluate on the held-out split, plot, log to MLflow."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from outcomes import iter_outcomes
from router import Router
from training.evaluate import calibration_error
from training.pipeline import Prepared, TrainConfig, TrainResult, train
from training.registry import DEFAULT_REGISTERED_MODEL, LADDER_TAG, signature_of
from training.scoring import (
    Evaluation,
    add_intervals,
    evaluate_bundle,
    format_report,
    write_plot,
)

log = logging.getLogger(__name__)
# Held-out intervals are logged with every run, so two versions' metrics in the MLflow UI
# come with the spread that one test split allows. A resample costs about 25 ms per
# 1,000 prompts, so large splits get fewer rounds (at least 50): about 5 s at 2,400
# prompts, about 30 s at 50,000.
BOOTSTRAP_ROUNDS = 200
BOOTSTRAP_PROMPT_ROUNDS = 3_000_000


def bootstrap_rounds(n_prompts: int) -> int:
    return max(50, min(BOOTSTRAP_ROUNDS, BOOTSTRAP_PROMPT_ROUNDS // max(1, n_prompts)))


def route_latency_us(router: Router, prompts: list[str], n: int = 300) -> dict[str, float]:
    sample = prompts[:n] or ["hello"]
    for t in sample[:20]:
        router.route(t)
    times = []
    for t in sample:
        s = time.perf_counter()
        router.route(t)
        times.append((time.perf_counter() - s) * 1e6)
    return {"p50_us": float(np.median(times)), "p99_us": float(np.percentile(times, 99))}


def plot_calibration(ev: Evaluation, names: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = (ev.q >= 0.5).astype(float)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect")
    edges = np.linspace(0, 1, 11)
    for j, n in enumerate(names):
        idx = np.clip(np.digitize(ev.p[:, j], edges) - 1, 0, 9)
        xs, ys = [], []
        for b in range(10):
            sel = idx == b
            if sel.sum() >= 5:
                xs.append(ev.p[sel, j].mean())
                ys.append(y[sel, j].mean())
        ax.plot(xs, ys, marker="o", label=n)
    ax.set_xlabel("predicted P(pass)")
    ax.set_ylabel("observed pass rate")
    ax.set_title("calibration per tier (held-out)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_tier_mix(ev: Evaluation, names: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mix = np.bincount(ev.choice, minlength=len(names))
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.bar(names, mix / max(1, mix.sum()))
    ax.set_ylabel("share of requests")
    ax.set_title("tier mix of the bundle's policy (held-out)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _has_split(path: Path, split: str) -> bool:
    return any(True for _ in iter_outcomes(path, split))


def pick_registered_model(
    ladder_path: Path, requested: str | None
) -> tuple[str | None, str | None]:
    """Before training: the registered model this ladder's version will join (one per
    ladder; see training.registry.registered_model_for), and a note when it is derived.
    `requested` '' skips registration. A store that cannot be asked now is left for the
    run's own logging to report (it names the store and keeps the bundle)."""
    if requested == "":
        return None, None
    from router.ladder import Ladder
    from training.registry import RegistryError, client, registered_model_for

    ladder = Ladder.load(ladder_path)
    try:
        return registered_model_for(client(), ladder, ladder_path, requested)
    except RegistryError:
        raise
    except Exception as e:  # unreachable or misconfigured store
        log.debug("registry not checked before training: %s", e)
        return requested or DEFAULT_REGISTERED_MODEL, None


def train_evaluate_log(
    cfg: TrainConfig,
    *,
    eval_split: str | None = "test",
    mlflow: bool = True,
    registered_model: str | None = DEFAULT_REGISTERED_MODEL,
    registered_note: str | None = None,
    extra_params: dict[str, Any] | None = None,
    extra_tags: dict[str, str] | None = None,
    prepared: Prepared | None = None,
) -> dict[str, Any]:
    """`extra_params`/`extra_tags` let callers (e.g. retrain) record provenance on the run;
    `prepared`: labels and features from a training table (see `pipeline.train`)."""
    res: TrainResult = train(cfg, prepared)
    router = Router.load(res.bundle)
    names = router.ladder.names
    summary: dict[str, Any] = {
        "bundle": str(res.bundle),
        "router_version": res.router_version,
        "train_prompts": len(res.labels),
        "policy": {
            "goal": res.policy.goal,
            "thresholds": list(res.policy.thresholds),
            **res.policy.expected,
        },
        "validation": res.report["validation"],
        "model_selection": res.report.get("model_selection"),
        "operating_points": res.report.get("operating_points"),
        "routing_alone": res.report.get("routing_alone"),
        "accurate_reference": res.report.get("accurate_reference"),
        "timings_s": {k: round(v, 2) for k, v in res.timings.items()},
    }
    plots: list[Path] = []
    metrics: dict[str, Any] = {
        "validation": {k: v for k, v in res.report["validation"].items() if not isinstance(v, list)}
    }
    selection = res.report.get("model_selection") or {}
    for name, figures in selection.get("candidates", {}).items():  # each candidate's OOF
        metrics[f"oof.{name}"] = {
            k: v for k, v in figures.items() if isinstance(v, int | float) and k != "c"
        }
    cascade = res.report.get("cascade")
    if cascade:  # the verifier and cascade policy, fitted on out-of-fold predictions
        expected = cascade["cascade_policy"]["expected"]
        summary["cascade"] = {
            "verifier_oof_auc": cascade["verifier_oof_auc"],
            "second_opinion": cascade["second_opinion"],
            "points": cascade["cascade_points"],
            "policy": expected,
        }
        metrics["cascade"] = {
            "verifier_oof_auc": cascade["verifier_oof_auc"],
            "validation": {k: v for k, v in expected.items() if isinstance(v, int | float)},
        }
    prompts_for_latency = res.labels.prompts
    eval_rows = rounds = 0
    if eval_split and _has_split(cfg.outcomes, eval_split):
        ev = evaluate_bundle(router, cfg.outcomes, eval_split)
        rounds = bootstrap_rounds(len(ev.q))
        add_intervals(ev, rounds)
        log.info("held-out evaluation (%s split):\n%s", eval_split, format_report(ev.report))
        # Fixed file names, so the MLflow UI can line the plots of two runs up.
        plot_dir = cfg.out.parent / f"{cfg.out.name}-plots"
        plot_dir.mkdir(exist_ok=True)
        plots = [
            write_plot(
                ev,
                names,
                plot_dir / "curve.png",
                f"{cfg.outcomes.name} ({eval_split}): cost vs quality",
            ),
            plot_calibration(ev, names, plot_dir / "calibration.png"),
            plot_tier_mix(ev, names, plot_dir / "tier_mix.png"),
        ]
        ece = calibration_error(ev.p, (ev.q >= 0.5).astype(float))
        summary["test"] = {
            **ev.report["router"],
            "interval": ev.report["router_interval"],
            "policy": ev.report.get("policy"),
            "always": ev.report["always"],
            "random": ev.report["random"],
            "oracle": ev.report["oracle"],
        }
        summary["plots"] = [str(p) for p in plots]
        metrics["test"] = {
            **ev.report["router"],
            "policy": ev.report.get("policy", {}),
            "calibration_error": dict(zip(names, ece, strict=True)),
        }
        mix = np.bincount(ev.choice, minlength=len(names)) / max(1, len(ev.choice))
        metrics["test"]["policy"] = {
            **metrics["test"]["policy"],
            "tier_share": dict(zip(names, mix.tolist(), strict=True)),
        }
        metrics["baseline"] = {"random": ev.report["random"], "oracle": ev.report["oracle"]}
        if "system" in ev.report:  # route, verify, escalate: replayed on recorded answers
            summary["test"]["system"] = ev.report["system"]
            metrics["test_system"] = ev.report["system"]
        metrics["test_interval"] = ev.report["router_interval"]
        prompts_for_latency = ev.prompts
        eval_rows = len(ev.choice)
    lat = route_latency_us(router, prompts_for_latency)
    summary["route_latency"] = lat
    metrics["route"] = lat
    if mlflow:
        from training.tracking import log_training_run, metrics_for_mlflow

        params = {
            "featurizer": cfg.featurizer,
            "goal": cfg.goal,
            "ladder": ",".join(names),
            "ladder.models": ",".join(t.model_id for t in router.ladder.tiers),
            "ladder.outcomes_keys": ",".join(t.outcomes_key for t in router.ladder.tiers),
            "ladder.prices_in": ",".join(str(t.price_in_per_mtok) for t in router.ladder.tiers),
            "ladder.prices_out": ",".join(str(t.price_out_per_mtok) for t in router.ladder.tiers),
            "model": selection.get("selected", "soft_cluster"),
            **{f"model.{k}": v for k, v in cfg.model.params().items()},
            "train_file": str(cfg.outcomes),
            "train_file_sha256": res.report["outcomes_sha256"],
            "train_rows": len(res.labels),
            "dropped_rows": res.labels.dropped,
            "folds": cfg.folds,
            "policy.thresholds": ",".join(f"{t:.3f}" for t in res.policy.thresholds),
            "eval_split": eval_split if eval_rows else "",
            "eval_rows": eval_rows,
            "test_interval.rounds": rounds,
            **(extra_params or {}),
        }
        run_id, version = log_training_run(
            params=params,
            metrics=metrics_for_mlflow(metrics),
            artifacts=plots,
            bundle=res.bundle,
            tags={
                "router_version": res.router_version,
                "featurizer": cfg.featurizer,
                "data": cfg.outcomes.name,
                LADDER_TAG: signature_of(router.ladder),
                **(extra_tags or {}),
            },
            registered_model=registered_model or None,
        )
        summary["mlflow"] = {
            "run_id": run_id,
            "registered_version": version,
            "registered_model": registered_model or None,
        }
        if registered_note:
            summary["mlflow"]["note"] = registered_note
    return summary
