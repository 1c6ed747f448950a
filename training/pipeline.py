"""`train`: outcomes file + tier ladder -> verified bundle directory (+ an MLflow run).

label -> featurize -> out-of-fold predictions (to set the policy threshold honestly)
-> fit on all training rows -> export ONNX -> bundle with manifest -> evaluate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.bundle import sha256_file, write_manifest
from router.featurizer import (
    ENCODER_MODEL,
    ENCODER_TOKENIZER,
    FEATURIZER_FILE,
    STATIC_TABLE,
    STATIC_TOKENIZER,
    Featurizer,
    FeaturizerConfig,
)
from router.joint_space import JOINT_SPACE_FILE
from router.ladder import Ladder
from router.outcomes import OutcomeRecord, read_outcomes
from router.policy import POLICY_FILE, ThresholdPolicy
from router.router import FEATURES_INPUT, LADDER_FILE, MODEL_FILE
from training import assets
from training.evaluate import calibration_error, curve_metrics, prompt_costs
from training.featurize import Features, featurize
from training.labels import LabelSet, build_labels, missing_tier_report
from training.model import ModelConfig, SoftClusterModel
from training.onnx_graph import GraphBuilder, build_model
from training.policy_fit import fit_threshold, parse_goal

log = logging.getLogger(__name__)
REPORT_FILE = "train_report.json"


@dataclass(frozen=True)
class TrainConfig:
    outcomes: Path
    tiers: Path
    out: Path
    featurizer: str = "fast"
    goal: str = "top"
    model: ModelConfig = field(default_factory=ModelConfig)
    folds: int = 5
    max_train: int | None = None
    seed: int = 0

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
    model: SoftClusterModel
    policy: ThresholdPolicy
    report: dict[str, Any]
    ladder: Ladder
    timings: dict[str, float] = field(default_factory=dict)


def training_records(path: Path, max_train: int | None, seed: int) -> list[OutcomeRecord]:
    """The train split; a file without split fields counts as all-train."""
    recs = [r for r in read_outcomes(path) if r.split in ("train", None)]
    if max_train is not None and len(recs) > max_train:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(recs), size=max_train, replace=False))
        recs = [recs[i] for i in keep]
    return recs


def out_of_fold(
    model_cfg: ModelConfig,
    f: Features,
    y: np.ndarray,
    folds: int,
    seed: int,
    w: np.ndarray | None = None,
    tasks: Sequence[str] | None = None,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(y)) % folds
    p = np.zeros(y.shape, dtype=np.float32)
    for k in range(folds):
        tr, va = np.where(fold != k)[0], np.where(fold == k)[0]
        wt = None if w is None else w[tr]
        tt = None if tasks is None else [tasks[i] for i in tr]
        model = SoftClusterModel(model_cfg).fit(f.take(tr), y[tr], wt, tt)
        p[va] = model.predict_proba(f.take(va))
    return p


def train(cfg: TrainConfig) -> TrainResult:
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    ladder = Ladder.load(cfg.tiers)
    goal = parse_goal(cfg.goal, ladder)
    log.info("reading %s (train split)", cfg.outcomes)
    recs = training_records(cfg.outcomes, cfg.max_train, cfg.seed)
    labels = build_labels(recs, ladder)
    if len(labels) < 20:
        raise ValueError(
            f"{cfg.outcomes}: only {len(labels)} training prompts have a result for any tier "
            f"of the ladder (outcomes keys {[t.outcomes_key for t in ladder.tiers]}); need >= 20"
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
    feats = featurize(labels.prompts, featurizer, encoder.model if encoder else None)
    timings["featurize_s"] = time.monotonic() - t

    t = time.monotonic()
    log.info("fitting %d-fold out-of-fold predictions to set the policy", cfg.folds)
    oof = out_of_fold(cfg.model, feats, y, cfg.folds, cfg.seed, labels.weights, labels.tasks)
    q = np.nan_to_num(labels.scores, nan=0.0)
    c = prompt_costs(labels.prompts, labels.output_tokens, ladder)
    complete = ~np.isnan(labels.scores).any(axis=1)
    policy = fit_threshold(oof[complete], q[complete], c[complete], goal, ladder)
    val_metrics = (
        curve_metrics(oof[complete], q[complete], c[complete]) if complete.sum() > 10 else {}
    )
    log.info("policy for goal %r: thresholds %s, %s", goal.text, policy.thresholds, policy.expected)
    timings["validate_s"] = time.monotonic() - t

    t = time.monotonic()
    model = SoftClusterModel(cfg.model).fit(feats, y, labels.weights, labels.tasks)
    log.info(
        "category head: %s",
        f"{len(model.task_classes_)} categories, share {model.shares_[-1]:.2f}"
        if model.task_classes_
        else "off (fewer than 2 categories with enough prompts, or --task-weight 0)",
    )
    timings["fit_s"] = time.monotonic() - t

    t = time.monotonic()
    out = cfg.out
    if out.exists():
        if not (out / "manifest.json").exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not a bundle; refusing to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    b = GraphBuilder()
    p_out = model.add_to_graph(b, FEATURES_INPUT)
    build_model(
        b,
        p_out,
        dims=model.centroids_[0].shape[1],
        n_tiers=len(ladder),
        doc=f"tier-router {cfg.featurizer} model for {ladder.names}",
        path=out / MODEL_FILE,
    )
    shutil.copy(static.tokenizer_json, out / STATIC_TOKENIZER)
    np.save(out / STATIC_TABLE, static.table.astype(np.float32), allow_pickle=False)
    if encoder is not None:
        shutil.copy(encoder.model, out / ENCODER_MODEL)
        shutil.copy(encoder.tokenizer_json, out / ENCODER_TOKENIZER)
    (out / LADDER_FILE).write_text(ladder.to_toml(), encoding="utf-8")
    (out / POLICY_FILE).write_text(policy.to_json() + "\n", encoding="utf-8")
    (out / FEATURIZER_FILE).write_text(fcfg.to_json() + "\n", encoding="utf-8")
    (out / JOINT_SPACE_FILE).write_text(model.space_.to_json() + "\n", encoding="utf-8")
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
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    digest = hashlib.sha256(
        (sha256_file(out / MODEL_FILE) + sha256_file(out / POLICY_FILE)).encode()
    ).hexdigest()
    version = f"{cfg.featurizer}-{time.strftime('%Y%m%d-%H%M%S')}-{digest[:8]}"
    write_manifest(
        out,
        version,
        {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "featurizer": cfg.featurizer,
            "tiers": ladder.names,
            "goal": goal.text,
            "train_config": {k: str(v) for k, v in asdict(cfg).items() if k != "model"},
        },
    )
    timings["export_s"] = time.monotonic() - t
    timings["total_s"] = time.monotonic() - t_start
    log.info("bundle %s written to %s in %.1f s", version, out, timings["total_s"])
    return TrainResult(out, version, labels, feats, model, policy, report, ladder, timings)
