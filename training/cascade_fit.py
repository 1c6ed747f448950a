"""Fit the cascade policy from outcomes files that carry answers.

The cascade's thresholds (router.cascade) are searched on the verifier's out-of-fold
probabilities (training.verifier_fit) and the recorded scores, counting the cost of every
call the cascade makes (a rejected answer and a second opinion are paid for), on the
matrices of training.cascade_sim. A sweep over a cost/quality trade-off gives the
operating points; the policy is the cheapest of all tried settings whose quality meets the
goal. `fit_answer_cascade` is the stage train() runs: verifier, cost model, then policy.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from outcomes import OutcomeRecord
from router.cascade import NEVER, CascadeFile, CascadePolicy, EscalationCost
from router.ladder import Ladder
from router.tokens import CHARS_PER_TOKEN
from router.verifier import VECTOR_NAMES, WITH_PREV, WITH_SECOND, VerifierSpec
from training.answer_stats import reading_report
from training.cascade_sim import CascadeData, simulate
from training.evaluate import curve_metrics, envelope_metrics
from training.recorded_answers import AnswerSet, read_answers
from training.verifier_fit import FittedVerifier, fit_verifier

log = logging.getLogger(__name__)
_PARAMS = ("start", "accept", "consult", "accept_second", "cost_weight")
COST_WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
# The coordinate search runs once per grid resolution, all settings tried pooled: the
# objective is a step function of the thresholds, so one grid's path lands on a local
# optimum that moves with tiny changes of the verifier (about +-0.01 system pgr_auc out of
# fold on mmlu_pro); two resolutions make the result steadier for a few seconds more.
GRID_SIZES = (24, 31)


def refit_cascade(
    file: CascadeFile,
    d: CascadeData,
    max_calls: int,
    *,
    goal_tier: int,
    goal_points: float,
    goal_text: str,
    routing_start: Sequence[float],
) -> CascadeFile:
    """The cascade policy (and its sweep) fitted again to another goal, on the same rows."""
    target = float(d.q[:, goal_tier].mean()) - goal_points / 100.0
    search = fit_cascade(d, target, routing_start, max_calls=max_calls, goal_tier=goal_tier)
    extra = routing_points(d.p_router, max_calls)
    return cascade_file(search, extra, file.second_opinion, goal_text, file.cost)


def _grid(values: np.ndarray, k: int = 24) -> list[float]:
    """Quantiles of `values` as thresholds to try, plus 0 and NEVER."""
    v = values[~np.isnan(values)]
    qs = np.quantile(v, np.linspace(0.02, 0.98, k)) if len(v) else np.array([])
    return sorted({0.0, NEVER, *(round(float(x), 5) for x in qs)})


def search_grids(d: CascadeData, k: int = 24) -> dict[str, list[list[float]]]:
    """Per threshold and tier below the top, the values the search tries: `k` quantiles of
    the probabilities each threshold is compared with."""
    free = d.q.shape[1] - 1
    return {
        "start": [_grid(d.p_router[:, j], k) for j in range(free)],
        "accept": [_grid(d.v[:, j, :].ravel(), k) for j in range(free)],
        # The consult rule is applied before the second opinion is known: to the answer
        # alone, or knowing the tier below's.
        "consult": [_grid(d.v[:, j, [0, WITH_PREV]].ravel(), k) for j in range(free)],
        "accept_second": [
            _grid(d.v[:, j, WITH_SECOND::WITH_PREV].ravel(), k) for j in range(free)
        ],
        "cost_weight": [list(COST_WEIGHTS)] * free,
    }


@dataclass
class PolicySearch:
    policy: CascadePolicy
    points: list[CascadePolicy]
    tried: int


def fit_cascade(
    d: CascadeData,
    target: float,
    routing_start: Sequence[float],
    *,
    max_calls: int,
    goal_tier: int | None = None,
    margin_se: float = 1.0,
    n_lambdas: int = 28,
    rounds: int = 2,
    judge: bool = True,
    grid_sizes: Sequence[int] = GRID_SIZES,
) -> PolicySearch:
    """Coordinate search of the thresholds for a sweep of trade-offs (quality - lam * cost).

    The policy is the cheapest setting whose training-split quality meets `target` by
    `margin_se` standard errors of its per-prompt difference to the goal tier (when
    `goal_tier` is given): a setting that meets the goal only by the luck of these rows
    would miss it on the next ones, and on a cascade a little more quality costs little.
    """
    n, tiers = d.q.shape
    free = tiers - 1
    top_cost = float(d.c[:, -1].mean()) or 1.0
    grids = search_grids(d, grid_sizes[0])
    # judge=False: routing alone (every answer accepted), the policy's fallback when
    # judging answers does not pay on the training split.
    names = ["start", "accept", "cost_weight"] if judge else ["start"]
    if d.has_second and judge:
        names += ["consult", "accept_second"]
    tried: dict[tuple, tuple[float, float]] = {}

    def make(th: dict[str, list[float]], label: str, alias: str = "") -> CascadePolicy:
        return CascadePolicy(
            start=tuple(th["start"]),
            accept=tuple(th["accept"]),
            consult=tuple(th["consult"]),
            accept_second=tuple(th["accept_second"]),
            cost_weight=tuple(th["cost_weight"]),
            start_lambda=th.get("start_lambda", [-1.0])[0],
            max_calls=max_calls,
            label=label,
            expected={"alias": alias} if alias else {},
        )

    def evaluate(th: dict[str, list[float]]) -> tuple[float, float]:
        key = (*(v for nm in _PARAMS for v in th[nm]), th.get("start_lambda", [-1.0])[0])
        if key not in tried:
            cost, qual, _ = simulate(make(th, ""), d)
            tried[key] = (float(cost.mean()), float(qual.mean()))
        return tried[key]

    def descend(
        th: dict[str, list[float]], lam: float, grids: dict[str, list[list[float]]]
    ) -> tuple[dict[str, list[float]], float]:
        """Coordinate ascent of quality - lam * cost from `th`; judging params come
        first, since the start thresholds decide which tiers they matter for."""
        th = {k: list(v) for k, v in th.items()}
        score = -math.inf
        for _ in range(rounds):
            for nm in names:
                for j in range(free):
                    for v in grids[nm][j]:
                        trial = {k: list(x) for k, x in th.items()}
                        trial[nm][j] = v
                        cost, qual = evaluate(trial)
                        if qual - lam * cost / top_cost > score + 1e-12:
                            th, score = trial, qual - lam * cost / top_cost
        return th, score

    def mid(grid: list[float]) -> float:
        inner = [g for g in grid if 0.0 < g < NEVER]
        return inner[len(inner) // 2] if inner else 0.5

    # Starting points: routing alone (accept whatever the router's tier says), and a full
    # cascade (everyone starts cheapest, unsure answers consult the second opinion).
    def full_cascade(grids: dict[str, list[list[float]]]) -> dict[str, list[float]]:
        return {
            "start": [0.0] * free,
            "accept": [mid(grids["accept"][j]) for j in range(free)],
            "consult": [0.0 if d.has_second else NEVER] * free,
            "accept_second": [
                mid(grids["accept_second"][j]) if d.has_second else NEVER for j in range(free)
            ],
            "cost_weight": [0.0] * free,
        }

    routing = {
        "start": [float(x) for x in routing_start],
        "accept": [0.0] * free,
        "consult": [NEVER] * free,
        "accept_second": [NEVER] * free,
        "cost_weight": [0.0] * free,
    }
    # Routing alone is one of the cascade's settings (accept every answer): try its whole
    # grid of start thresholds, so the frontier below is never worse than routing's.
    if free <= 2:
        for combo in itertools.product(*grids["start"]):
            evaluate({**routing, "start": [float(x) for x in combo]})
    # And routing by P(pass) minus a price on each tier's cost predicted from the prompt.
    if d.c_hat is not None:
        for lam in (0.0, *np.geomspace(1e-3, 1e3, 60)):
            evaluate({**routing, "start_lambda": [float(lam)]})
    points: list[CascadePolicy] = []
    for pass_no, size in enumerate(grid_sizes):
        grids_k = search_grids(d, size)
        warm = [routing, full_cascade(grids_k)] if judge else [routing]
        for i, lam in enumerate(np.geomspace(30.0, 0.01, n_lambdas)):
            results = [descend(th, lam, grids_k) for th in warm]
            best = max(results, key=lambda r: r[1])[0]
            warm = [r[0] for r in results]  # each chain goes on from where it got to
            if pass_no == 0:
                points.append(make(best, point_name("tradeoff", lam), f"lam{i:02d}"))
            else:  # the finer grid's chain: its own names
                points.append(make(best, f"{point_name('tradeoff', lam)}-grid{size}"))

    def unpack(key: tuple) -> dict[str, list[float]]:
        vals = list(key)
        out = {nm: vals[i * free : (i + 1) * free] for i, nm in enumerate(_PARAMS)}
        out["start_lambda"] = [vals[-1]]
        return out

    def cheapest(q_min: float) -> tuple | None:
        ok = [(c, -q, k) for k, (c, q) in tried.items() if q >= q_min - 1e-12]
        return min(ok)[2] if ok else None

    # More operating points: for a ladder of quality levels, the cheapest setting tried.
    qs = [q for _, q in tried.values()]
    for i, level in enumerate(np.linspace(min(qs), max(qs), 40)):
        found = cheapest(float(level))
        if found is not None:
            points.append(make(unpack(found), point_name("min-quality", level), f"q{i:02d}"))
    # The goal: the cheapest setting tried whose training-split quality meets it (with
    # the margin), among the cheapest few hundred that meet it on average.
    key = None
    meeting = sorted((c, k) for k, (c, q) in tried.items() if q >= target - 1e-12)
    for _, k in meeting[:400]:
        if goal_tier is None:
            key = k
            break
        _, qual, _ = simulate(make(unpack(k), ""), d)
        diff = qual - d.q[:, goal_tier]
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
        if qual.mean() >= target + margin_se * se - 1e-12:
            key = k
            break
    ok = key is not None
    if key is None:
        key = max(tried, key=lambda k: (tried[k][1], -tried[k][0]))
    policy = make(unpack(key), "policy")
    pol_cost, pol_qual, pol_calls = simulate(policy, d)
    expected = {
        "target_quality": target,
        "margin_se": margin_se if goal_tier is not None else 0.0,
        "goal_met_on_validation": bool(ok),
        "validation_quality": float(pol_qual.mean()),
        "validation_cost_vs_top": float(pol_cost.mean()) / top_cost,
        "validation_calls_per_request": float(pol_calls.mean()),
        "validation_prompts": int(n),
    }
    policy = CascadePolicy(**{**policy.__dict__, "expected": expected})
    return PolicySearch(policy, _distinct(points), len(tried))


def point_name(kind: str, value: float) -> str:
    """An operating point's label that says what it is: `tradeoff-<lambda>` (the best
    cost/quality trade-off at that price on cost), `min-quality-<q>` (the cheapest setting
    reaching quality q on the training split), `route-only-<tau>` (routing alone, start at
    the first tier with P(pass) >= tau). The older labels (lam03, q10, route05) stay
    readable as aliases (`expected["alias"]`)."""
    return f"{kind}-{float(value):.3g}"


def _distinct(points: list[CascadePolicy]) -> list[CascadePolicy]:
    seen: set[tuple] = set()
    out = []
    for p in points:
        key = (p.start, p.accept, p.consult, p.accept_second, p.cost_weight)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def routing_points(p_router: np.ndarray, max_calls: int, k: int = 12) -> list[CascadePolicy]:
    """Routing alone as cascade points: one P(pass) threshold for every tier, no verifier."""
    free = p_router.shape[1] - 1
    out = []
    for i, tau in enumerate(np.linspace(0.0, 1.0, k)):
        out.append(
            CascadePolicy(
                start=(float(tau),) * free,
                accept=(0.0,) * free,
                consult=(NEVER,) * free,
                accept_second=(NEVER,) * free,
                cost_weight=(0.0,) * free,
                max_calls=max_calls,
                label=point_name("route-only", tau),
                expected={"alias": f"route{i:02d}"},
            )
        )
    return out


def oof_curve(file: CascadeFile, d: CascadeData) -> dict[str, float]:
    """System and routing-alone metrics on the out-of-fold predictions of the training
    split (the same definitions as the test split's); the operating points were chosen
    on these rows, so this is a little optimistic for the system."""
    pts = []
    for pol in (file.policy, *file.points):
        cost, qual, _ = simulate(pol, d)
        pts.append((float(cost.mean()), float(qual.mean())))
    tiers = d.q.shape[1]
    fixed = [(float(d.c[:, t].mean()), float(d.q[:, t].mean())) for t in range(tiers)]
    system = envelope_metrics(pts, fixed)
    routing = curve_metrics(d.p_router, d.q, d.c)
    return {
        **{f"system_{k}": v for k, v in system.items()},
        **{f"routing_{k}": v for k, v in routing.items()},
    }


# -- the escalation cost model ---------------------------------------------------------------


def fit_escalation_cost(
    answer_log_chars: np.ndarray, prompts: Sequence[str], costs: np.ndarray, ladder: Ladder
) -> EscalationCost:
    """Least squares of each tier's log output tokens on the tier below's answer length and
    the prompt's length; `answer_log_chars` is (n, T) log1p(chars)."""
    prompt_chars = np.array([len(p) for p in prompts], dtype=np.float64)
    in_tok = np.maximum(1, np.ceil(prompt_chars / CHARS_PER_TOKEN))  # prompt_tokens, vectorized
    prices = tuple((t.price_in_per_mtok, t.price_out_per_mtok) for t in ladder.tiers)
    coef, ref = [], []
    for t in range(1, len(ladder)):
        pin, pout = prices[t]
        out = np.maximum((costs[:, t] * 1e6 - in_tok * pin) / max(pout, 1e-12), 1.0)
        x = np.stack([np.ones(len(out)), answer_log_chars[:, t - 1], np.log1p(prompt_chars)], 1)
        a, b, c = (float(v) for v in np.linalg.lstsq(x, np.log(out), rcond=None)[0])
        coef.append((a, b, c))
        pred = np.exp(x @ np.array([a, b, c]))
        ref.append(float(np.mean(np.log((in_tok * pin + pred * pout) / 1e6 + 1e-12))))
    prompt_coef, predicted = [], []
    for t in range(len(ladder)):
        pin, pout = prices[t]
        out = np.maximum((costs[:, t] * 1e6 - in_tok * pin) / max(pout, 1e-12), 1.0)
        x = np.stack([np.ones(len(out)), np.log1p(prompt_chars)], 1)
        a, c = (float(v) for v in np.linalg.lstsq(x, np.log(out), rcond=None)[0])
        prompt_coef.append((a, c))
        predicted.append((in_tok * pin + np.exp(x @ np.array([a, c])) * pout) / 1e6)
    scale = float(np.mean(predicted)) or 1.0
    return EscalationCost(tuple(coef), prices, tuple(ref), tuple(prompt_coef), scale)


def escalation_z(
    cost: EscalationCost, answer_log_chars: np.ndarray, prompts: Sequence[str]
) -> np.ndarray:
    """(n, T - 1) z of the next tier for each tier's answer, as walk computes it."""
    n, tiers = answer_log_chars.shape
    z = np.zeros((n, max(tiers - 1, 0)))
    for i, prompt in enumerate(prompts):
        for t in range(tiers - 1):
            chars = round(math.expm1(answer_log_chars[i, t]))
            z[i, t] = cost.z(t + 1, chars, len(prompt))
    return z


def cascade_file(
    search: PolicySearch,
    extra: list[CascadePolicy],
    has_second: bool,
    goal: str,
    cost: EscalationCost,
) -> CascadeFile:
    return CascadeFile(
        policy=search.policy,
        points=tuple(_distinct([*search.points, *extra])),
        second_opinion=has_second,
        cost=cost,
        goal=goal,
    )


# -- the stage train() runs ------------------------------------------------------------------


@dataclass
class CascadeResult:
    verifier: FittedVerifier
    spec: VerifierSpec
    file: CascadeFile
    answers: AnswerSet
    rows: np.ndarray  # training rows the policy was fitted on
    data: CascadeData
    report: dict[str, Any]


def fit_answer_cascade(
    records: Sequence[OutcomeRecord],
    ids: Sequence[str],
    prompts: Sequence[str],
    ladder: Ladder,
    embed: Callable[[str], np.ndarray],
    p_router_oof: np.ndarray,
    passed: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    fold: np.ndarray,
    *,
    goal_tier: int,
    goal_points: float,
    goal_text: str,
    routing_start: Sequence[float],
    max_calls: int | None = None,
    read_cache: dict[str, list[Any]] | None = None,
) -> CascadeResult:
    """Verifier + cascade policy from the training split's recorded answers."""
    answers = read_answers(records, ids, ladder, embed, read_cache)
    by_id = {r.id: r for r in records}
    fitted = fit_verifier(answers, p_router_oof, passed, fold)
    rows = answers.complete & ~np.isnan(scores).any(axis=1)
    has_second = answers.second is not None
    calls_cap = max_calls or len(ladder) + int(has_second)
    kept = np.where(rows)[0]
    log_chars = np.array([[answers.reads[i][t].hand[0] for t in range(len(ladder))] for i in kept])
    kept_prompts = [prompts[i] for i in kept]
    cost_model = fit_escalation_cost(log_chars, kept_prompts, costs[rows], ladder)
    data = CascadeData(
        p_router_oof[rows].astype(np.float64),
        fitted.oof[rows],
        scores[rows],
        costs[rows],
        answers.second_cost[rows],
        has_second,
        escalation_z(cost_model, log_chars, kept_prompts),
        np.array([cost_model.start_costs(len(p)) for p in kept_prompts]),
    )
    target = float(data.q[:, goal_tier].mean()) - goal_points / 100.0
    search = fit_cascade(data, target, routing_start, max_calls=calls_cap, goal_tier=goal_tier)
    extra = routing_points(data.p_router, calls_cap)
    file = cascade_file(search, extra, has_second, goal_text, cost_model)
    oof = oof_curve(file, data)
    judged = oof["system_pgr_auc"] > oof["routing_pgr_auc"]
    if not judged:
        # Judging answers did not beat routing alone out of fold: the policy routes.
        log.warning(
            "the cascade's out-of-fold pgr_auc %.3f does not beat routing alone's %.3f on "
            "the training split: the bundle's policy routes without judging answers",
            oof["system_pgr_auc"],
            oof["routing_pgr_auc"],
        )
        search = fit_cascade(
            data, target, routing_start, max_calls=calls_cap, goal_tier=goal_tier, judge=False
        )
        file = cascade_file(search, extra, has_second, goal_text, cost_model)
        oof = oof_curve(file, data)
    info = {
        "oof_auc": {k: round(v, 4) for k, v in fitted.auc.items()},
        "router_oof_auc": {k: round(v, 4) for k, v in fitted.router_auc.items()},
        "contexts_judged_by_router": fitted.fallback,
        "rows": int(rows.sum()),
    }
    spec = VerifierSpec(tiers=tuple(ladder.names), vector=VECTOR_NAMES, fitted=info)
    report = {
        "oof": oof,
        "judges_answers": judged,
        "verifier_oof_auc": info["oof_auc"],
        "router_oof_auc": info["router_oof_auc"],
        "contexts_judged_by_router": fitted.fallback,
        "answers_read": reading_report([by_id[ids[i]] for i in kept], ladder),
        "cascade_rows": int(rows.sum()),
        "cascade_points": len(file.points),
        "cascade_settings_tried": search.tried,
        "cascade_policy": file.policy.to_dict(),
        "second_opinion": ladder.second_opinion.name if ladder.second_opinion else None,
    }
    log.info(
        "verifier OOF AUC %s; cascade policy for %r: %s",
        info["oof_auc"],
        goal_text,
        file.policy.expected,
    )
    return CascadeResult(fitted, spec, file, answers, rows, data, report)
