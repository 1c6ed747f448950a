"""`train`: outcomes file + tier ladder -> verified bundle directory (+ an MLflow run).

label -> featurize -> out-of-fold predictions (to set the policy threshold honestly)
-> fit on all training rows -> export ONNX -> bundle with manifest -> evaluate.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from outcomes import OutcomeRecord, read_outcomes
from router import bundle as layout
from router.bundle import seal_bundle, sha256_file, staged_bundle
from router.featurizer import Featurizer, FeaturizerConfig
from router.ladder import Ladder
from router.policy import DEFAULT_GOAL, ThresholdPolicy
from training import assets
from training.accurate_reference import accurate_reference, format_line
from training.candidates import SetModel
from training.cascade_fit import CascadeResult, fit_answer_cascade
from training.cascade_sim import save_cascade_data
from training.evaluate import calibration_error, curve_metrics, knowable_costs, prompt_costs
from training.featurize import Features, encode_dense, featurize
from training.finite_json import dumps
from training.labels import LabelSet, build_labels, missing_tier_report
from training.ladder_check import check_ladder_against, check_tiers_have_results
from training.model import ModelConfig, SoftClusterModel
from training.onnx_graph import export_model
from training.operating_points import (
    PolicyData,
    format_table,
    gap_line,
    tradeoff_table,
)
from training.policy_fit import fit_threshold, parse_goal
from training.recorded_answers import has_answers
from training.second_opinion import choose_second_opinion
from training.selection import SelectionConfig, fold_ids, select_model
from training.verifier_fit import export_verifier

log = logging.getLogger(__name__)
# Training prompts with every tier's result: the policy's thresholds are fitted on them.
MIN_COMPLETE = 10


@dataclass(frozen=True)
class TrainConfig:
    outcomes: Path
    tiers: Path
    out: Path
    featurizer: str = "fast"
    goal: str = DEFAULT_GOAL
    model: ModelConfig = field(default_factory=ModelConfig)
    folds: int = 5
    max_train: int | None = None
    seed: int = 0
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    # Fast featurizer only: also report the accurate featurizer's out-of-fold reference
    # (training/accurate_reference.py). Opt-in: measured at 0.5-7 min on 0.7-2.2k prompts
    # on a loaded 2-core machine, above the minute a default may add.
    accurate_reference: bool = False

    def __post_init__(self) -> None:
        if self.featurizer not in ("fast", "accurate"):
            raise ValueError(f"--featurizer must be 'fast' or 'accurate', got {self.featurizer!r}")
        if self.folds < 2:
            raise ValueError(f"--folds must be >= 2, got {self.folds}")
        if self.max_train is not None and self.max_train < 20:
            raise ValueError(f"--max-train must be >= 20, got {self.max_train}")


@dataclass
class TrainResult:
    bundle: Path
    router_version: str
    labels: LabelSet
    features: Features
    model: SoftClusterModel | SetModel
    policy: ThresholdPolicy
    report: dict[str, Any]
    ladder: Ladder
    timings: dict[str, float] = field(default_factory=dict)
    cascade: CascadeResult | None = None  # verifier + cascade policy, when trained on answers


def training_records(
    records: list[OutcomeRecord], max_train: int | None, seed: int
) -> list[OutcomeRecord]:
    """The train split; a file without split fields counts as all-train."""
    recs = [r for r in records if r.split in ("train", None)]
    if max_train is not None and len(recs) > max_train:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(recs), size=max_train, replace=False))
        recs = [recs[i] for i in keep]
    return recs


@dataclass(frozen=True)
class Prepared:
    """Labels and features made elsewhere (a training table, training/table_fit.py): the
    fit uses them instead of reading and featurizing `outcomes`. `featurizer_digest` must
    name the featurizer this fit exports (scale_table.featurizer_digest)."""

    labels: LabelSet
    features: Features
    featurizer_digest: str
    # Records among `labels` whose recorded answers the verifier and cascade policy may be
    # fitted on (the base file's train split: a table or a features log has no answers).
    records: tuple[OutcomeRecord, ...] = ()


def train(cfg: TrainConfig, prepared: Prepared | None = None) -> TrainResult:
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    ladder = Ladder.load(cfg.tiers)
    goal = parse_goal(cfg.goal, ladder)
    if prepared is None:
        log.info("reading %s (train split)", cfg.outcomes)
        every_split = read_outcomes(cfg.outcomes)
        # Before any work: a ladder key the file does not have is a typo, not missing data.
        check_ladder_against(ladder, cfg.tiers, every_split, cfg.outcomes)
        recs = training_records(every_split, cfg.max_train, cfg.seed)
        del every_split
        labels = build_labels(recs, ladder)
    else:  # answer texts only where the caller has them (a table carries none)
        recs, labels = list(prepared.records), prepared.labels
    if len(labels) < 20:
        raise ValueError(
            f"{cfg.outcomes}: only {len(labels)} training prompts have a result for any tier "
            f"of the ladder (outcomes keys {[t.outcomes_key for t in ladder.tiers]}); need >= 20"
        )
    check_tiers_have_results(
        ladder, cfg.tiers, missing_tier_report(labels, ladder), len(labels), cfg.outcomes
    )
    n_complete = int((~np.isnan(labels.scores).any(axis=1)).sum())
    if n_complete < MIN_COMPLETE:
        raise ValueError(
            f"{cfg.outcomes}: only {n_complete} training prompts have a result for every tier "
            f"of the ladder ({', '.join(ladder.names)}); the policy is fitted on those and "
            f"needs at least {MIN_COMPLETE}"
        )
    y = labels.passed
    log.info(
        "%d prompts labeled (%d without any tier result dropped); missing per tier: %s; "
        "no tier passed: %d",
        len(labels),
        labels.dropped,
        missing_tier_report(labels, ladder),
        int((labels.cheapest_pass < 0).sum()),
    )
    timings["label_s"] = time.monotonic() - t_start

    t = time.monotonic()
    static = assets.static_assets()
    encoder = assets.encoder_assets() if cfg.featurizer == "accurate" else None
    fcfg = FeaturizerConfig(kind=cfg.featurizer)
    featurizer = Featurizer(
        fcfg, static.tokenizer_json, static.table, encoder.tokenizer_json if encoder else None
    )
    timings["assets_s"] = time.monotonic() - t

    t = time.monotonic()
    if prepared is None:
        feats = featurize(labels.prompts, featurizer, encoder.model if encoder else None)
    else:
        from training.scale_table import assets_digest

        if cfg.featurizer != "fast" or prepared.featurizer_digest != assets_digest(
            fcfg, static.tokenizer_json, static.table
        ):
            raise ValueError(
                "the table's features were made by another featurizer than the one this fit "
                "exports (fast, this machine's static assets): rebuild the table with a "
                "bundle trained here"
            )
        feats = prepared.features
    timings["featurize_s"] = time.monotonic() - t

    t = time.monotonic()
    log.info("%d-fold out-of-fold predictions: select a model, set the policy", cfg.folds)
    q = np.nan_to_num(labels.scores, nan=0.0)
    chars = labels.prompt_chars  # a row logged as features has its length, not its text
    c = prompt_costs(chars, labels.output_tokens, ladder)
    complete = ~np.isnan(labels.scores).any(axis=1)
    c_decide = knowable_costs(c, chars, ladder)  # what routeval's sweep decides with
    selection = select_model(
        cfg.model,
        feats,
        y,
        q,
        c,
        complete,
        cfg.folds,
        cfg.seed,
        labels.weights,
        labels.tasks,
        cfg.selection,
        c_decide,
    )
    oof = selection.oof
    policy = fit_threshold(oof[complete], q[complete], c[complete], goal, ladder)
    val_metrics = (
        curve_metrics(oof[complete], q[complete], c[complete], c_decide[complete])
        if complete.sum() > 10
        else {}
    )
    log.info("policy for goal %r: thresholds %s, %s", goal.text, policy.thresholds, policy.expected)
    timings["validate_s"] = time.monotonic() - t

    accurate = None
    if cfg.accurate_reference and cfg.featurizer == "fast":
        t = time.monotonic()
        enc = assets.encoder_assets()
        acc_featurizer = Featurizer(
            FeaturizerConfig(kind="accurate"),
            static.tokenizer_json,
            static.table,
            enc.tokenizer_json,
        )
        accurate = accurate_reference(
            labels.prompts,
            lambda texts: encode_dense(texts, acc_featurizer, enc.model),
            oof,
            y,
            q,
            c,
            c_decide,
            complete,
            fold_ids(len(y), cfg.folds, cfg.seed),
            seed=cfg.seed,
        )
        timings["accurate_reference_s"] = time.monotonic() - t

    t = time.monotonic()
    cascade = None
    if has_answers(recs, ladder):
        log.info("the outcomes carry answers: fitting the verifier and the cascade policy")
        folds = fold_ids(len(y), cfg.folds, cfg.seed)  # the router's folds

        def fit_one(lad: Ladder, cache: dict[str, list[Any]]) -> CascadeResult:
            return fit_answer_cascade(
                recs,
                labels.ids,
                labels.prompts,
                lad,
                lambda text: featurizer.embedding(text)[0],
                oof,
                y,
                q,
                c,
                folds,
                goal_tier=goal.tier_index,
                goal_points=goal.points,
                goal_text=goal.text,
                routing_start=policy.thresholds,
                read_cache=cache,
            )

        cascade, ladder, second_table = choose_second_opinion(recs, labels.ids, ladder, fit_one)
        if second_table:
            cascade.report["second_opinion_choice"] = second_table
        timings["cascade_s"] = time.monotonic() - t

    t = time.monotonic()
    model = selection.model  # the selected family, fitted on every training row
    log.info(
        "category head: %s",
        f"{len(model.task_classes_)} categories, share {model.shares_[-1]:.2f}"
        if model.task_classes_
        else "off (fewer than 2 categories with enough prompts, or --task-weight 0)",
    )
    timings["fit_s"] = time.monotonic() - t

    t = time.monotonic()
    target = cfg.out
    if target.exists() and not (target / layout.MANIFEST).exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not a bundle; refusing to overwrite it")
    # Written beside the old bundle and renamed into place: a failed export or a concurrent
    # hot swap never sees half a bundle.
    with staged_bundle(target, replace=True) as out:
        export_model(
            model.softmax_sets(), out, f"tier-router {cfg.featurizer} model for {ladder.names}"
        )
        shutil.copy(static.tokenizer_json, out / layout.STATIC_TOKENIZER)
        np.save(out / layout.STATIC_TABLE, static.table.astype(np.float32), allow_pickle=False)
        if encoder is not None:
            shutil.copy(encoder.model, out / layout.ENCODER_MODEL)
            shutil.copy(encoder.tokenizer_json, out / layout.ENCODER_TOKENIZER)
        (out / layout.LADDER_FILE).write_text(ladder.to_toml(), encoding="utf-8")
        (out / layout.POLICY_FILE).write_text(policy.to_json() + "\n", encoding="utf-8")
        (out / layout.FEATURIZER_FILE).write_text(fcfg.to_json() + "\n", encoding="utf-8")
        (out / layout.JOINT_SPACE_FILE).write_text(model.space_.to_json() + "\n", encoding="utf-8")
        if cascade is not None:
            export_verifier(cascade.verifier, ladder, out)
            (out / layout.VERIFIER_FILE).write_text(cascade.spec.to_json() + "\n", encoding="utf-8")
            (out / layout.CASCADE_FILE).write_text(cascade.file.to_json() + "\n", encoding="utf-8")
            save_cascade_data(
                cascade.data, out / layout.CASCADE_DATA, cascade.file.policy.max_calls
            )
        report = {
            "outcomes": str(cfg.outcomes),
            "outcomes_sha256": sha256_file(cfg.outcomes),
            "train_prompts": len(labels),
            "dropped_prompts": labels.dropped,
            "missing_per_tier": missing_tier_report(labels, ladder),
            "no_tier_passed": int((labels.cheapest_pass < 0).sum()),
            "cheapest_pass_mix": np.bincount(
                labels.cheapest_pass + 1, minlength=len(ladder) + 1
            ).tolist(),
            "featurizer": cfg.featurizer,
            "model": cfg.model.params(),
            "task_head_classes": model.task_classes_,
            "goal": goal.text,
            "validation": {**val_metrics, "calibration_error": calibration_error(oof, y)},
            "policy_expected": policy.expected,
            "folds": cfg.folds,
            "seed": cfg.seed,
            "cascade": cascade.report if cascade is not None else None,
        }
        policy_data = PolicyData(oof.astype(np.float64), labels.scores, c)
        policy_data.save(out / layout.POLICY_DATA)  # what `tier-router policy` refits from
        report["model_selection"] = selection.report
        report["operating_points"] = tradeoff_table(policy_data, ladder)
        report["routing_alone"] = gap_line(val_metrics)
        table = format_table(report["operating_points"], policy_data, ladder)
        lines = [table, report["routing_alone"]]
        if accurate is not None:
            report["accurate_reference"] = accurate
            lines.append(format_line(accurate, selection.name))
        log.info("%s", "\n".join(lines))
        (out / layout.REPORT_FILE).write_text(dumps(report, indent=2) + "\n", encoding="utf-8")
        version = seal_bundle(
            out,
            cfg.featurizer,
            {
                "featurizer": cfg.featurizer,
                "tiers": ladder.names,
                "goal": goal.text,
                "train_config": {
                    k: str(v) for k, v in asdict(cfg).items() if k not in ("model", "selection")
                },
                "model_families": list(cfg.selection.families),
            },
        ).router_version
    out = target
    timings["export_s"] = time.monotonic() - t
    timings["total_s"] = time.monotonic() - t_start
    log.info("bundle %s written to %s in %.1f s", version, out, timings["total_s"])
    return TrainResult(out, version, labels, feats, model, policy, report, ladder, timings, cascade)
