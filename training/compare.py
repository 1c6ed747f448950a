"""Compare router versions on the same held-out outcomes, and judge a promotion.

Logged metrics of two runs are only comparable when they were measured on the same
prompts, so promotion and `compare` re-score every version's bundle on one outcomes
split. The promotion rule looks at the champion's operating point (the average cost and
quality its own policy realizes on that data) and asks two questions of each version's
cost-quality envelope there:
  - quality at the champion's cost: may the candidate be lower?   (no)
  - cost for the champion's quality: may the candidate be higher? (no)
Envelopes are compared because the envelope measures how well a router ranks prompts
by difficulty (what training changed). But what a promotion ships is each bundle's own
policy, one point on its envelope: a candidate whose envelope ties the champion's can
still serve far lower quality (another --goal, a threshold fit on other data). So the
policy points are compared too, and a quality drop beyond `max_quality_drop` (default
0.005, half a point) refuses.

Every number here comes from one split, so `paired` resamples its prompts and reports how
much of a difference between two versions could be that split's luck.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from outcomes import iter_outcomes
from router import Router
from training.evaluate import (
    Point,
    cost_for_quality,
    paired_difference,
    quality_at,
    router_curve,
    save_cost_quality_plot,
    upper_envelope,
)
from training.registry import download_bundle
from training.scoring import Evaluation, evaluate_bundle

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

COMPARISON_EXPERIMENT = "tier-router-comparisons"
# How much lower the candidate's policy quality may be than the champion's (quality
# points on [0, 1]; 0.005 = half a point) before promotion refuses.
DEFAULT_MAX_QUALITY_DROP = 0.005
TABLE_METRICS = (
    "pgr_auc",
    "cost_at_top",
    "cost_at_mid",
    "best_q",
    "policy.cost",
    "policy.quality",
    "policy.cost_vs_top",
)


@dataclass(frozen=True)
class EvalData:
    """Which outcomes rows every version is scored on."""

    outcomes: Path
    split: str | None

    def __post_init__(self) -> None:
        if not self.outcomes.is_file():
            raise ValueError(f"--outcomes: no such file: {self.outcomes}")
        if not any(True for _ in iter_outcomes(self.outcomes, self.split)):
            raise ValueError(f"--split: {self.outcomes} has no rows in split {self.split!r}")


@dataclass(frozen=True)
class VersionEval:
    label: str  # e.g. "v3" or "challenger"
    router_version: str
    tiers: tuple[str, ...]
    prices: tuple[tuple[float, float], ...]
    report: dict[str, Any]
    envelope: list[Point]
    policy_point: Point
    outcomes_keys: tuple[str, ...] = ()
    logged: dict[str, float] = field(default_factory=dict)  # metrics logged by its run
    version: str | None = None
    run_id: str | None = None
    # Per-prompt P(pass), quality and cost on the eval rows, for paired resampling.
    scores: Evaluation | None = field(default=None, repr=False, compare=False)

    def metric(self, key: str) -> float:
        if key.startswith("policy."):
            return float(self.report["policy"][key.split(".", 1)[1]])
        return float(self.report["router"][key])


@dataclass(frozen=True)
class PointCheck:
    """Both envelopes read at one operating point (cost $/req, quality)."""

    where: str  # "champion's policy" or "candidate's policy"
    cost: float
    quality: float
    champion_quality_at_cost: float
    candidate_quality_at_cost: float
    champion_cost_for_quality: float
    candidate_cost_for_quality: float

    def explain(self) -> str:
        return "\n".join(
            [
                f"at the {self.where} operating point (cost ${self.cost:.6f}/req, "
                f"quality {self.quality:.4f}):",
                f"  quality at that cost: champion {self.champion_quality_at_cost:.4f}, "
                f"candidate {self.candidate_quality_at_cost:.4f}",
                f"  cost for that quality: champion ${self.champion_cost_for_quality:.6f}, "
                f"candidate ${self.candidate_cost_for_quality:.6f}",
            ]
        )


@dataclass(frozen=True)
class PolicyCheck:
    """The operating points each version would ship: its own policy on the same rows."""

    champion_cost: float
    champion_quality: float
    candidate_cost: float
    candidate_quality: float
    max_quality_drop: float

    @property
    def quality_drop(self) -> float:
        return self.champion_quality - self.candidate_quality

    def explain(self) -> str:
        dc = self.candidate_cost - self.champion_cost
        rel = f" ({dc / self.champion_cost:+.1%})" if self.champion_cost > 0 else ""
        return "\n".join(
            [
                "policy operating points (what each version would serve):",
                f"  champion  cost ${self.champion_cost:.6f}/req, quality "
                f"{self.champion_quality:.4f}",
                f"  candidate cost ${self.candidate_cost:.6f}/req, quality "
                f"{self.candidate_quality:.4f}",
                f"  quality {-self.quality_drop:+.4f} (allowed drop {self.max_quality_drop:.4f}), "
                f"cost {dc:+.6f}{rel}",
            ]
        )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checks: tuple[PointCheck, ...]
    reasons: tuple[str, ...]
    policy: PolicyCheck | None = None

    def explain(self) -> str:
        lines = [c.explain() for c in self.checks]
        if self.policy is not None:
            lines.append(self.policy.explain())
        lines += [f"  worse: {r}" for r in self.reasons]
        return "\n".join(lines)


def evaluate_router(router: Router, data: EvalData, label: str) -> VersionEval:
    ev: Evaluation = evaluate_bundle(router, data.outcomes, data.split)
    pol = ev.report["policy"]
    point = (float(pol["cost"]), float(pol["quality"]))
    return VersionEval(
        label=label,
        router_version=router.version,
        tiers=tuple(router.ladder.names),
        prices=tuple((t.price_in_per_mtok, t.price_out_per_mtok) for t in router.ladder.tiers),
        outcomes_keys=tuple(t.outcomes_key for t in router.ladder.tiers),
        report=ev.report,
        # The policy's own point is achievable, so it belongs under the envelope too.
        envelope=upper_envelope([*router_curve(ev.p, ev.q, ev.c), point]),
        policy_point=point,
        scores=ev,
    )


def evaluate_version(c: MlflowClient, mv: ModelVersion, data: EvalData) -> VersionEval:
    """Download the version's bundle to a temp dir, verify it, and score it on `data`."""
    with tempfile.TemporaryDirectory(prefix="tier-router-cmp-") as tmp:
        pulled = download_bundle(mv, Path(tmp) / "bundle")
        ve = evaluate_router(Router.load(pulled.path), data, f"v{mv.version}")
    logged = dict(c.get_run(pulled.run_id).data.metrics)
    return dataclasses.replace(ve, logged=logged, version=str(mv.version), run_id=pulled.run_id)


def default_eval_data(c: MlflowClient, run_id: str | None) -> EvalData:
    """The training file and held-out split recorded in a run's params."""
    if not run_id:
        raise ValueError("--outcomes is required: the reference version has no source run")
    params = c.get_run(run_id).data.params
    f = params.get("train_file")
    if not f or not Path(f).is_file():
        raise ValueError(
            f"--outcomes is required: run {run_id} recorded training file {f!r}, which is not "
            "readable here"
        )
    return EvalData(Path(f), params.get("eval_split") or "test")


def check_comparable(evals: list[VersionEval]) -> None:
    first = evals[0]
    for e in evals[1:]:
        if (e.tiers, e.prices, e.outcomes_keys) != (first.tiers, first.prices, first.outcomes_keys):
            raise ValueError(
                f"{e.label} routes over {e.tiers} {e.prices}, {first.label} over {first.tiers} "
                f"{first.prices}: cost-quality curves over different ladders are not comparable"
            )


def judge(
    candidate: VersionEval,
    champ: VersionEval,
    tolerance: float = 0.0,
    max_quality_drop: float = DEFAULT_MAX_QUALITY_DROP,
) -> Verdict:
    """Is the candidate at least as good as the champion where it matters?

    Both envelopes are read at the champion's operating point (what is served today)
    and at the candidate's (what would be served after promotion). A policy sitting on
    an always-<tier> corner is a point every envelope passes through, so checking one
    point alone would let a router that cannot rank prompts tie its way in.
    `tolerance` is in quality points (and the same fraction of cost), for noisy small
    evaluation sets; 0 means any loss refuses. Then the policies themselves: the
    candidate's may serve at most `max_quality_drop` less quality than the champion's,
    whatever it saves (a deliberately cheaper policy is a --force or a larger drop).
    """
    if not 0.0 <= max_quality_drop <= 1.0:
        raise ValueError(f"--max-quality-drop must be in [0, 1], got {max_quality_drop}")
    check_comparable([champ, candidate])
    checks, reasons = [], []
    eps = 1e-12
    for where, (oc, oq) in (
        ("champion's policy", champ.policy_point),
        ("candidate's policy", candidate.policy_point),
    ):
        ck = PointCheck(
            where,
            oc,
            oq,
            quality_at(champ.envelope, oc),
            quality_at(candidate.envelope, oc),
            cost_for_quality(champ.envelope, oq),
            cost_for_quality(candidate.envelope, oq),
        )
        checks.append(ck)
        if _lt(ck.candidate_quality_at_cost, ck.champion_quality_at_cost - tolerance - eps):
            reasons.append(
                f"lower quality at the {where} cost (${oc:.6f}/req): "
                f"{ck.candidate_quality_at_cost:.4f} vs {ck.champion_quality_at_cost:.4f}"
            )
        if _gt(ck.candidate_cost_for_quality, ck.champion_cost_for_quality * (1 + tolerance) + eps):
            reasons.append(
                f"higher cost at the {where} quality ({oq:.4f}): "
                f"${ck.candidate_cost_for_quality:.6f} vs ${ck.champion_cost_for_quality:.6f}"
            )
    pc = PolicyCheck(*champ.policy_point, *candidate.policy_point, max_quality_drop)
    if _lt(pc.candidate_quality, pc.champion_quality - max_quality_drop - eps):
        reasons.append(
            f"its policy serves lower quality: {pc.candidate_quality:.4f} vs "
            f"{pc.champion_quality:.4f} ({-pc.quality_drop:+.4f}, beyond the allowed drop of "
            f"{max_quality_drop:.4f}; --max-quality-drop), at ${pc.candidate_cost:.6f} vs "
            f"${pc.champion_cost:.6f}/req"
        )
    return Verdict(not reasons, tuple(checks), tuple(reasons), pc)


def _lt(a: float, b: float) -> bool:
    """a < b, where an undefined candidate value counts as worse (unless both are)."""
    return not math.isnan(b) and (math.isnan(a) or a < b)


def _gt(a: float, b: float) -> bool:
    return not math.isnan(b) and (math.isnan(a) or a > b)


# Which way is better for each metric, for the words next to a paired interval.
HIGHER_IS_BETTER = {
    "pgr_auc": True, "best_q": True, "cost_at_top": False, "cost_at_mid": False,
    "policy.quality": True, "policy.cost": False,
}  # fmt: skip


@dataclass(frozen=True)
class Paired:
    """One version minus a reference version, on the same resampled prompts."""

    label: str
    reference: str
    rounds: int
    diffs: dict[str, dict[str, float]]  # metric -> {"diff", "lo", "hi"}

    def reading(self, metric: str) -> str:
        d = self.diffs[metric]
        if not (np.isfinite(d["lo"]) and np.isfinite(d["hi"])):
            return "undefined (a target is out of reach)"
        if d["lo"] <= 0.0 <= d["hi"]:
            return "within noise"
        up = d["lo"] > 0.0
        return "better" if up == HIGHER_IS_BETTER[metric] else "worse"

    def explain(self, n: int) -> str:
        lines = [
            f"{self.label} minus {self.reference}, paired over {self.rounds} resamples of the "
            f"same {n} prompts (95%):"
        ]
        for k, d in self.diffs.items():
            lines.append(
                f"  {k:14s} {d['diff']:+.4f}  [{d['lo']:+.4f}, {d['hi']:+.4f}]  {self.reading(k)}"
            )
        return "\n".join(lines)


def paired(version: VersionEval, reference: VersionEval, rounds: int) -> Paired:
    """Bootstrap the metric differences; both versions must have scored the same rows."""
    a, b = version.scores, reference.scores
    if a is None or b is None:
        raise ValueError("paired differences need both versions' per-prompt scores")
    if a.q.shape != b.q.shape or not np.array_equal(a.q, b.q) or not np.array_equal(a.c, b.c):
        raise ValueError(
            f"{version.label} and {reference.label} were scored on different prompts; "
            "paired differences need the same rows"
        )
    diffs = paired_difference(a.p, b.p, a.q, a.c, rounds=rounds)
    diffs.update(_paired_policy(a.choice, b.choice, a.q, a.c, rounds))
    return Paired(version.label, reference.label, rounds, diffs)


def _paired_policy(
    choice: np.ndarray,
    ref: np.ndarray,
    q: np.ndarray,
    c: np.ndarray,
    rounds: int,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Policy quality and cost of one version minus another, over resampled prompts."""
    rows = np.arange(len(q))
    dq = q[rows, choice] - q[rows, ref]
    dc = c[rows, choice] - c[rows, ref]
    idx = np.random.default_rng(seed).integers(0, len(q), size=(rounds, len(q)))
    a = (1 - level) / 2 * 100
    out = {}
    for k, d in (("policy.quality", dq), ("policy.cost", dc)):
        lo, hi = np.percentile(d[idx].mean(axis=1), [a, 100 - a])
        out[k] = {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi)}
    return out


def format_table(evals: list[VersionEval], data: EvalData) -> str:
    """Side by side: re-scored metrics on `data`, plus route latency from each run.

    Columns are as wide as their widest cell (labels and router versions are never cut),
    and every row's name column as wide as the longest name, so the columns line up.
    """
    n = evals[0].report["n"]
    tiers = evals[0].tiers
    rows: list[tuple[str, list[str]]] = [
        ("metric", [e.label for e in evals]),
        ("router_version", [e.router_version for e in evals]),
    ]
    for k in TABLE_METRICS:
        rows.append((k, [f"{e.metric(k):.6g}" for e in evals]))
    for i, t in enumerate(tiers):
        rows.append(
            (
                f"policy.tier_share.{t}",
                [f"{e.report['policy']['tier_mix'][i] / n:.3f}" for e in evals],
            )
        )
    for k in ("route.p50_us", "route.p99_us", *(f"test.calibration_error.{t}" for t in tiers)):
        vals = [e.logged.get(k, float("nan")) for e in evals]
        if any(not math.isnan(v) for v in vals):
            rows.append((f"{k} (run)", [f"{v:.4g}" for v in vals]))
    name_w = max(len(name) for name, _ in rows)
    widths = [max(len(cells[j]) for _, cells in rows) for j in range(len(evals))]
    lines = [f"{n} prompts of {data.outcomes.name} (split {data.split})"]
    for name, cells in rows:
        lines.append(
            f"{name:<{name_w}}"
            + "".join(f"  {cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)


def plot_overlay(evals: list[VersionEval], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for e in evals:
        xs, ys = zip(*e.envelope, strict=True)
        (line,) = ax.plot(
            xs,
            ys,
            "-",
            marker=".",
            markersize=3,
            label=f"{e.label} (pgr_auc {e.metric('pgr_auc'):.3f})",
        )
        ax.scatter(
            [e.policy_point[0]],
            [e.policy_point[1]],
            marker="*",
            s=150,
            color=line.get_color(),
            zorder=6,
            edgecolor="black",
        )
    always = evals[0].report["always"]
    for i, t in enumerate(evals[0].tiers):
        a = always[i]
        ax.scatter([a["cost"]], [a["quality"]], s=30, color="gray", zorder=5)
        ax.annotate(
            f"always {t}",
            (a["cost"], a["quality"]),
            textcoords="offset points",
            xytext=(5, -10),
            fontsize=8,
        )
    return save_cost_quality_plot(fig, ax, path, title + "  (* = each version's policy)")


def log_comparison(
    evals: list[VersionEval],
    data: EvalData,
    plot: Path,
    model: str,
    pairs: list[Paired] | None = None,
) -> str:
    """A run in its own experiment: the overlay PNG plus `v<N>.<metric>` per version, and
    `v<N>-v<M>.<metric>[.lo|.hi]` for each paired difference."""
    import mlflow

    from router.bundle import sha256_file

    mlflow.set_experiment(COMPARISON_EXPERIMENT)
    labels = ",".join(e.label for e in evals)
    # MLflow's "View run ... at: URL" goes to stderr: stdout is the CLI's JSON document.
    with redirect_stdout(sys.stderr), mlflow.start_run(run_name=f"{model} {labels}") as run:
        mlflow.set_tags({"kind": "comparison", "registered_model": model})
        mlflow.log_params(
            {
                "registered_model": model,
                "versions": labels,
                "outcomes": str(data.outcomes),
                "outcomes_sha256": sha256_file(data.outcomes),
                "split": str(data.split),
                "eval_rows": evals[0].report["n"],
                **{f"{e.label}.router_version": e.router_version for e in evals},
                **{f"{e.label}.run_id": e.run_id or "" for e in evals},
            }
        )
        mlflow.log_metrics(
            {
                f"{e.label}.{k}": e.metric(k)
                for e in evals
                for k in TABLE_METRICS
                if math.isfinite(e.metric(k))
            }
        )
        paired_metrics = {
            f"{pr.label}-{pr.reference}.{k}{'' if part == 'diff' else '.' + part}": v
            for pr in pairs or []
            for k, d in pr.diffs.items()
            for part, v in d.items()
            if math.isfinite(v)
        }
        if paired_metrics:
            mlflow.log_metrics(paired_metrics)
        mlflow.log_artifact(str(plot), artifact_path="plots")
        return str(run.info.run_id)
