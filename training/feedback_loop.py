"""The feedback loop, end to end and offline: serve, log, grade, retrain, for several rounds.

Round 0 trains a bundle on a seed share of an answers file's train prompts (every tier's
answer and score). Each later round serves the next share of the train prompts through
the local Bedrock server (real boto3 Converse calls) with the cascade and its exploration
on, logs every request, writes a downstream check's grades of the logged answers (the
recorded scores, fake_bedrock/grades.py), and retrains exactly as `tier-router retrain
--log ... --grades ...` does (base file + every round's logs and grades so far, the
first-attempt label rule with its inverse-propensity weights) into the next bundle.

Each bundle's system (its cascade replayed on the test split, every call paid for) is
scored per prompt, so a round is compared with round 0 on the same prompts with a paired
bootstrap interval. Each bundle's verifier is scored by AUC on the test split's recorded
answers, next to a reference verifier trained on the same prompts with every label (what
logging could at best have shown it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcomes import OutcomeRecord, read_outcomes, write_outcomes
from router import Router
from router.answer_features import prompt_options
from router.ladder import Ladder
from training.recorded_answers import answer_text, call_cost
from training.replay import replay_records, replayable
from training.verifier_fit import _auc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    answers: Path  # an answers outcomes file with train and test splits
    ladder: Path
    work: Path  # bundles, logs, grades and the report go here
    rounds: int = 3
    seed_share: float = 0.3  # train prompts with full labels for round 0
    cascade_explore_rate: float = 0.1
    max_train: int | None = None  # a slice of the train prompts (tests)
    max_test: int | None = None
    folds: int = 5
    seed: int = 0
    threads: int = 4
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0 < self.seed_share < 1:
            raise ValueError(f"seed_share must be in (0, 1), got {self.seed_share}")
        if not 0 <= self.cascade_explore_rate <= 1:
            raise ValueError(
                f"cascade_explore_rate must be in [0, 1], got {self.cascade_explore_rate}"
            )
        for f in (self.answers, self.ladder):
            if not f.is_file():
                raise ValueError(f"no such file: {f}")


def _split(
    cfg: LoopConfig, ladder: Ladder
) -> tuple[list[OutcomeRecord], list[list[OutcomeRecord]], list[OutcomeRecord]]:
    """(seed prompts, the prompts of each round, test prompts): train prompts with every
    tier's (and the second opinion's) answer, shuffled reproducibly."""
    keys = [t.outcomes_key for t in ladder.tiers]
    if ladder.second_opinion is not None:
        keys.append(ladder.second_opinion.outcomes_key)
    train = [r for r in read_outcomes(cfg.answers, "train") if replayable(r, keys)]
    test = [r for r in read_outcomes(cfg.answers, "test") if replayable(r, keys)]
    rng = random.Random(cfg.seed)
    rng.shuffle(train)
    rng.shuffle(test)
    train = train[: cfg.max_train] if cfg.max_train else train
    test = test[: cfg.max_test] if cfg.max_test else test
    n_seed = max(20, int(len(train) * cfg.seed_share))
    rest = train[n_seed:]
    per = -(-len(rest) // cfg.rounds)
    return train[:n_seed], [rest[i * per : (i + 1) * per] for i in range(cfg.rounds)], test


def _train(cfg: LoopConfig, outcomes: Path, out: Path) -> Path:
    from training.pipeline import TrainConfig, train

    return train(
        TrainConfig(outcomes=outcomes, tiers=cfg.ladder, out=out, folds=cfg.folds, seed=cfg.seed)
    ).bundle


def _serve(
    cfg: LoopConfig,
    bundle: Path,
    prompts: list[OutcomeRecord],
    all_records: list[OutcomeRecord],
    log_path: Path,
    grades_path: Path,
    round_no: int,
) -> dict[str, Any]:
    """Serve `prompts` with the bundle's cascade (exploration on) through the local Bedrock
    server; log every request (text stored: the verifier retrains on answer texts) and
    write the grades of every logged answer."""
    from serving.demo import serve_and_grade
    from serving.outcome_log import PromptStorage
    from serving.tiered_client import TieredClientConfig

    client_cfg = TieredClientConfig(
        cascade_explore_rate=cfg.cascade_explore_rate,
        prompt_storage=PromptStorage.STORE,
        seed=cfg.seed + round_no,
    )
    sent = {f"round{round_no}-{i}": r for i, r in enumerate(prompts)}
    return serve_and_grade(
        Router.load(bundle), sent, all_records, client_cfg, log_path, grades_path, cfg.threads
    )


def _retrain(
    cfg: LoopConfig, base: Path, logs: Sequence[Path], grades: Sequence[Path], out: Path
) -> tuple[Path, dict[str, Any]]:
    """`tier-router retrain --log ... --grades ...` without the registry: merge, then train."""
    from training.retrain import RetrainConfig, merge

    rcfg = RetrainConfig(
        base=base, feedback=tuple(logs), tiers=cfg.ladder, out=out, grades=tuple(grades)
    )
    merged = out.parent / f"{out.name}-outcomes.jsonl.gz"
    st = merge(rcfg, merged)
    return _train(cfg, merged, out), {
        "feedback_rows": st.feedback_rows,
        "labels_per_tier": st.labels_per_tier,
        "dropped_escalation_labels": st.dropped_escalation_labels,
    }


def system_per_prompt(router: Router, test: list[OutcomeRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(cost, quality) per test prompt of the bundle's own operating point, replayed."""
    ladder = router.ladder
    by_key = {t.outcomes_key: t for t in ladder.tiers}
    if ladder.second_opinion is not None:
        by_key[ladder.second_opinion.outcomes_key] = ladder.second_opinion
    pos = {r.id: i for i, r in enumerate(test)}
    cost, qual = np.zeros(len(test)), np.zeros(len(test))
    for line in replay_records(router, test, [router.cascade.policy] if router.cascade else None):
        i = pos[line.id]
        rec = test[i]
        cost[i] = sum(call_cost(rec.prompt, rec, by_key[k]) for k in line.calls)
        qual[i] = rec.results[line.final].score if line.final else 0.0
    return cost, qual


def system_metrics(router: Router, test: list[OutcomeRecord]) -> dict[str, float]:
    """The system's whole cost-quality curve (every stored operating point replayed):
    pgr_auc, cost_at_top, best_q, less sensitive than one point to where the goal lands."""
    from training.cascade_eval import system_curve

    curve = system_curve(router, test)
    return {} if curve is None else {k: float(v) for k, v in curve.metrics().items()}


def verifier_auc(router: Router, test: list[OutcomeRecord]) -> dict[str, float]:
    """Per tier, the verifier's AUC on the recorded answers of `test` (each answer judged
    alone, with the router's P(pass)), and their mean."""
    assert router.verifier is not None
    p_router = router.p_pass_batch([r.prompt for r in test])
    out: dict[str, float] = {}
    for t, tier in enumerate(router.ladder.tiers):
        p, y = [], []
        for i, rec in enumerate(test):
            text = answer_text(rec, tier.outcomes_key)
            if text is None:
                continue
            read = router.verifier.read(rec.prompt, text, prompt_options(rec.prompt))
            p.append(router.verifier.p_pass(t, read, float(p_router[i, t])))
            y.append(float(rec.results[tier.outcomes_key].passed))
        out[tier.name] = _auc(np.array(p), np.array(y))
    out["mean"] = float(np.nanmean([out[t.name] for t in router.ladder.tiers]))
    return out


def _paired(a: np.ndarray, b: np.ndarray, rounds: int, seed: int) -> dict[str, float]:
    """mean(b - a) and its 95% bootstrap interval over the prompts."""
    d = b - a
    rng = np.random.default_rng(seed)
    means = [float(d[rng.integers(0, len(d), len(d))].mean()) for _ in range(rounds)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi)}


def run_loop(cfg: LoopConfig) -> dict[str, Any]:
    """Round 0, then `cfg.rounds` rounds of serve -> log -> grade -> retrain; the report."""
    ladder = Ladder.load(cfg.ladder)
    seed, chunks, test = _split(cfg, ladder)
    cfg.work.mkdir(parents=True, exist_ok=True)
    base = cfg.work / "base.jsonl.gz"
    write_outcomes(
        base,
        [
            *(dataclasses.replace(r, split="train") for r in seed),
            *(dataclasses.replace(r, split="test") for r in test),
        ],
    )
    everything = [*seed, *(r for c in chunks for r in c), *test]
    bundles = [_train(cfg, base, cfg.work / "bundle-0")]
    rounds: list[dict[str, Any]] = [{"round": 0, "train_prompts": len(seed)}]
    logs: list[Path] = []
    grades: list[Path] = []
    for k, chunk in enumerate(chunks, start=1):
        logs.append(cfg.work / f"log-{k}.jsonl")
        grades.append(cfg.work / f"grades-{k}.jsonl")
        served = _serve(cfg, bundles[-1], chunk, everything, logs[-1], grades[-1], k)
        bundle, merged = _retrain(cfg, base, logs, grades, cfg.work / f"bundle-{k}")
        bundles.append(bundle)
        rounds.append({"round": k, "served": served, "retrain": merged})
        log.info("round %d: %s", k, json.dumps(served))
    # The reference: the same prompts with every tier's label and answer (full labels).
    full = cfg.work / "full.jsonl.gz"
    write_outcomes(
        full,
        [
            *(dataclasses.replace(r, split="train") for r in seed),
            *(dataclasses.replace(r, split="train") for c in chunks for r in c),
            *(dataclasses.replace(r, split="test") for r in test),
        ],
    )
    reference = _train(cfg, full, cfg.work / "bundle-full-labels")
    per = [system_per_prompt(Router.load(b), test) for b in bundles]
    top = ladder.tiers[-1]
    top_cost = float(np.mean([call_cost(r.prompt, r, top) for r in test]))
    top_quality = float(np.mean([r.results[top.outcomes_key].score for r in test]))
    for k, (b, (c, q)) in enumerate(zip(bundles, per, strict=True)):
        rounds[k]["system"] = {
            "cost_usd": float(c.mean()),
            "quality": float(q.mean()),
            "cost_vs_top": float(c.mean() / top_cost) if top_cost else None,
        }
        rounds[k]["system_curve"] = system_metrics(Router.load(b), test)
        rounds[k]["verifier_auc"] = verifier_auc(Router.load(b), test)
        if k:
            rounds[k]["vs_round0"] = {
                "quality": _paired(per[0][1], q, cfg.bootstrap, cfg.seed),
                "cost_usd": _paired(per[0][0], c, cfg.bootstrap, cfg.seed),
            }
    ref_auc = verifier_auc(Router.load(reference), test)
    rc, rq = system_per_prompt(Router.load(reference), test)
    last = rounds[-1]["verifier_auc"]["mean"]
    return {
        "answers": str(cfg.answers),
        "test_prompts": len(test),
        "always_top": {"cost_usd": top_cost, "quality": top_quality},
        "cascade_explore_rate": cfg.cascade_explore_rate,
        "rounds": rounds,
        "full_labels": {
            "verifier_auc": ref_auc,
            "system_curve": system_metrics(Router.load(reference), test),
            "system": {"cost_usd": float(rc.mean()), "quality": float(rq.mean())},
        },
        "verifier_auc_gap": float(ref_auc["mean"] - last),
    }


def plot_loop(report: dict[str, Any], path: Path) -> Path:
    """Cost and quality of the system by round, with always-top and full labels beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    ks = [r["round"] for r in rounds]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ks, [r["system"]["quality"] for r in rounds], "o-", label="system (from logs)")
    a1.axhline(report["full_labels"]["system"]["quality"], ls="--", c="g", label="full labels")
    a1.axhline(report["always_top"]["quality"], ls=":", c="k", label="always top")
    a1.set(xlabel="round", ylabel="quality (test)", title="quality by round")
    a2.plot(ks, [r["system"]["cost_usd"] * 1000 for r in rounds], "o-", label="system (from logs)")
    a2.axhline(
        report["full_labels"]["system"]["cost_usd"] * 1000, ls="--", c="g", label="full labels"
    )
    a2.axhline(report["always_top"]["cost_usd"] * 1000, ls=":", c="k", label="always top")
    a2.set(xlabel="round", ylabel="cost per request (USD x 1000)", title="cost by round")
    for ax in (a1, a2):
        ax.set_xticks(ks)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
