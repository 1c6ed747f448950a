"""The cascade: start where the router says, judge each answer, accept or go up.

At a tier below the top the verifier's P(pass) for the answer decides: at or above
`accept` the answer is returned; in [`consult`, `accept`) and with a second opinion
configured and not yet asked, the second opinion is called once and the answer is judged
again with the agreement (`accept_second`); otherwise the next tier is called, knowing the
answer below. The top tier's answer is returned. `max_calls` caps the calls of a request
(second opinion included) and is never exceeded: at the cap the current answer is returned,
and a walk whose last call gave no answer stops there. A second opinion that gives no answer
is judged `escalate` in context `no_second` (or `cap` at the cap).

`walk` is the one implementation of these rules: replay feeds it recorded answers,
serving feeds it Bedrock calls, and training fits the thresholds with the same
semantics (training.cascade_sim mirrors it on matrices and a test keeps them equal).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from router.answer_features import prompt_options
from router.bundle import CASCADE_FILE
from router.tokens import prompt_tokens
from router.verifier import ReadAnswer, Verifier

NEVER = 1.01  # a threshold no probability reaches


@dataclass(frozen=True)
class CascadePolicy:
    """Thresholds per tier below the top (the top's answer is always accepted)."""

    start: tuple[float, ...]  # router P(pass) thresholds choosing the first tier
    accept: tuple[float, ...]
    consult: tuple[float, ...]
    accept_second: tuple[float, ...]
    # How much the predicted cost of the next tier moves the bar: the verifier's P(pass) is
    # compared as p + cost_weight * z, z = log(predicted next-tier cost / its typical cost).
    cost_weight: tuple[float, ...] = ()
    # >= 0: start at argmax over tiers of P(pass) - start_lambda * predicted cost / scale
    # (EscalationCost.start_costs) instead of at the first tier clearing `start`.
    start_lambda: float = -1.0
    max_calls: int = 4
    label: str = "policy"
    expected: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.start)
        if n < 1:
            raise ValueError("a cascade needs at least two tiers")
        if not self.cost_weight:
            object.__setattr__(self, "cost_weight", (0.0,) * n)
        for name in ("accept", "consult", "accept_second", "cost_weight"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"cascade {name} has {len(getattr(self, name))} values, need {n}")
        if not (isinstance(self.start_lambda, int | float) and math.isfinite(self.start_lambda)):
            raise ValueError(
                f"cascade start_lambda must be a finite number, got {self.start_lambda!r}"
            )
        for name in ("start", "accept", "consult", "accept_second"):
            for v in getattr(self, name):
                if not (isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= NEVER):
                    raise ValueError(
                        f"cascade {name} thresholds must be in [0, {NEVER}], got {v!r}"
                    )
        if (
            isinstance(self.max_calls, bool)
            or not isinstance(self.max_calls, int)
            or self.max_calls < 1
        ):
            raise ValueError(
                f"cascade max_calls must be a positive integer, got {self.max_calls!r}"
            )

    @property
    def n_tiers(self) -> int:
        return len(self.start) + 1

    def start_tier(self, p_router: Sequence[float], costs: Sequence[float] = ()) -> int:
        """`costs`: each tier's predicted cost over its scale, for a `start_lambda` rule."""
        if self.start_lambda >= 0 and costs:
            utility = [p - self.start_lambda * c for p, c in zip(p_router, costs, strict=True)]
            return max(range(len(utility)), key=lambda i: (utility[i], -i))
        for i, t in enumerate(self.start):
            if p_router[i] >= t:
                return i
        return len(self.start)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("start", "accept", "consult", "accept_second", "cost_weight"):
            d[k] = [round(float(v), 6) for v in d[k]]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> CascadePolicy:
        if not isinstance(d, dict):
            raise ValueError(f"{CASCADE_FILE}: a policy must be an object")
        try:
            return cls(
                start=tuple(float(v) for v in d["start"]),
                accept=tuple(float(v) for v in d["accept"]),
                consult=tuple(float(v) for v in d["consult"]),
                accept_second=tuple(float(v) for v in d["accept_second"]),
                cost_weight=tuple(float(v) for v in d.get("cost_weight") or ()),
                start_lambda=float(d.get("start_lambda", -1.0)),
                max_calls=int(d.get("max_calls", 4)),
                label=str(d.get("label", "policy")),
                expected=dict(d.get("expected") or {}),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{CASCADE_FILE}: policy lacks or mistypes {e}") from None


@dataclass(frozen=True)
class EscalationCost:
    """Predicted cost of the next tier from what is known after a tier answered.

    Output tokens of tier t+1 are log-linear in the length of tier t's answer and of the
    prompt (fitted on the training split); input tokens are router.tokens.prompt_tokens.
    `z` is the log of that cost over the tier's typical (mean log) cost.
    """

    coef: tuple[tuple[float, float, float], ...]  # per tier above the cheapest: a, b, c
    prices: tuple[tuple[float, float], ...]  # per tier: $/Mtok in, out
    ref: tuple[float, ...]  # per tier above the cheapest: mean log predicted cost
    # Before any call: per tier, log output tokens = a + c * log1p(prompt chars); and the
    # mean predicted cost over tiers, the scale a start_lambda is in.
    prompt_coef: tuple[tuple[float, float], ...] = ()
    scale: float = 1.0

    def start_costs(self, prompt_chars: int) -> list[float]:
        """Each tier's predicted cost for this prompt over `scale` ([] when not fitted)."""
        out = []
        for (a, c), (pin, pout) in zip(self.prompt_coef, self.prices, strict=False):
            tokens = math.exp(a + c * math.log1p(prompt_chars))
            out.append((prompt_tokens(prompt_chars) * pin + tokens * pout) / 1e6 / self.scale)
        return out

    def log_cost(self, tier: int, answer_chars: int, prompt_chars: int) -> float:
        a, b, c = self.coef[tier - 1]
        out = math.exp(a + b * math.log1p(answer_chars) + c * math.log1p(prompt_chars))
        pin, pout = self.prices[tier]
        return math.log((prompt_tokens(prompt_chars) * pin + out * pout) / 1e6 + 1e-12)

    def z(self, tier: int, answer_chars: int, prompt_chars: int) -> float:
        return self.log_cost(tier, answer_chars, prompt_chars) - self.ref[tier - 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "coef": [list(c) for c in self.coef],
            "prices": [list(p) for p in self.prices],
            "ref": list(self.ref),
            "prompt_coef": [list(c) for c in self.prompt_coef],
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, d: Any) -> EscalationCost:
        try:
            return cls(
                coef=tuple((float(a), float(b), float(c)) for a, b, c in d["coef"]),
                prices=tuple((float(i), float(o)) for i, o in d["prices"]),
                ref=tuple(float(r) for r in d["ref"]),
                prompt_coef=tuple((float(a), float(c)) for a, c in d.get("prompt_coef", ())),
                scale=float(d.get("scale", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{CASCADE_FILE}: invalid escalation_cost ({e})") from None


@dataclass(frozen=True)
class CascadeFile:
    """cascade.json: the bundle's own operating point and the sweep of others."""

    policy: CascadePolicy
    points: tuple[CascadePolicy, ...]
    second_opinion: bool
    cost: EscalationCost
    goal: str = "top"

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": "cascade",
                "goal": self.goal,
                "second_opinion": self.second_opinion,
                "escalation_cost": self.cost.to_dict(),
                "policy": self.policy.to_dict(),
                "points": [p.to_dict() for p in self.points],
            },
            indent=1,
        )

    def check(self, n_tiers: int, has_second: bool) -> None:
        """Refuse a cascade fitted for another ladder: every operating point and the cost
        model must have this ladder's tier count, and a second opinion the policy may
        consult must be in the ladder."""
        for p in (self.policy, *self.points):
            if p.n_tiers != n_tiers:
                raise ValueError(
                    f"operating point {p.label!r} has {p.n_tiers} tiers, the ladder {n_tiers}"
                )
        c = self.cost
        sizes = {
            "coef": (len(c.coef), n_tiers - 1),
            "prices": (len(c.prices), n_tiers),
            "ref": (len(c.ref), n_tiers - 1),
        }
        if c.prompt_coef:
            sizes["prompt_coef"] = (len(c.prompt_coef), n_tiers)
        for name, (got, want) in sizes.items():
            if got != want:
                raise ValueError(f"escalation_cost {name} has {got} entries, need {want}")
        if self.second_opinion and not has_second:
            raise ValueError("fitted with a second opinion the ladder does not name")

    @classmethod
    def from_json(cls, text: str) -> CascadeFile:
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("kind") != "cascade":
            raise ValueError(f"{CASCADE_FILE}: expected an object with kind = 'cascade'")
        points = d.get("points") or []
        if not isinstance(points, list):
            raise ValueError(f"{CASCADE_FILE}: 'points' must be a list")
        return cls(
            policy=CascadePolicy.from_dict(d.get("policy")),
            points=tuple(CascadePolicy.from_dict(p) for p in points),
            second_opinion=bool(d.get("second_opinion", False)),
            cost=EscalationCost.from_dict(d.get("escalation_cost")),
            goal=str(d.get("goal", "top")),
        )


@dataclass(frozen=True)
class Judgement:
    """One look at one answer: who answered, P(pass), the rule applied, the verdict."""

    tier: int
    p_pass: float  # the verifier's
    shift: float  # cost_weight * z: the next tier's predicted cost, added before comparing
    threshold: float
    context: str  # alone | second | prev | both | no_second (consulted, nothing came)
    verdict: str  # accept | escalate | consult | top | cap
    # The kind of final answer read from it (router.answer_reader: choice, number, math,
    # literal, text), None when none could be read: what the logs say of the reading.
    answer_kind: str | None = None

    def to_log(self) -> dict[str, Any]:
        """The judgement as an outcome log's attempt carries it (`verifier`)."""
        return {
            "p_pass": round(self.p_pass, 4),
            "shift": round(self.shift, 4),
            "threshold": self.threshold,
            "context": self.context,
            "verdict": self.verdict,
            "reason": self.reason,
            "answer_kind": self.answer_kind,  # the final answer read (None: unreadable)
        }

    @property
    def reason(self) -> str:
        if self.context == "no_second":
            why = "escalate" if self.verdict == "escalate" else "call cap reached: returned as is"
            return f"verifier p={self.p_pass:.3f}; second opinion unavailable: {why}"
        if self.verdict in ("top", "cap"):
            why = "top tier" if self.verdict == "top" else "call cap reached"
            return f"verifier p={self.p_pass:.3f} ({self.context}); {why}: returned as is"
        sign = ">=" if self.verdict == "accept" else "<"
        shift = f" {self.shift:+.3f} (next tier's cost)" if self.shift else ""
        return (
            f"verifier p={self.p_pass:.3f}{shift} {sign} {self.threshold:.3f} "
            f"({self.context}): {self.verdict}"
        )


@dataclass
class Walk:
    """What the cascade did for one request: calls in order ('tier:i' / 'second')."""

    calls: list[str] = field(default_factory=list)
    judgements: list[Judgement] = field(default_factory=list)
    final: int | None = None  # tier index of the returned answer, None if none answered


# answer(i) -> the tier's answer text, or None when it gave no usable answer (unavailable,
# failed an explicit check): the walk then moves up. second() likewise for the second opinion.
AnswerFn = Callable[[int], "str | None"]
SecondFn = Callable[[], "str | None"]


def walk(
    policy: CascadePolicy,
    cost: EscalationCost,
    verifier: Verifier,
    prompt: str,
    p_router: Sequence[float],
    answer: AnswerFn,
    second: SecondFn | None,
    *,
    start: int | None = None,
    into: Walk | None = None,
) -> Walk:
    """`into`: the Walk to fill (a caller whose `answer` may raise keeps what was judged)."""
    top = policy.n_tiers - 1
    options = prompt_options(prompt)
    w = into if into is not None else Walk()
    second_read: ReadAnswer | None = None
    second_asked = False
    prev: ReadAnswer | None = None
    costs = cost.start_costs(len(prompt)) if start is None else []
    tier = policy.start_tier(p_router, costs) if start is None else start
    while tier <= top:
        if len(w.calls) >= policy.max_calls:
            return w  # the last call gave no answer and the cap allows no other
        w.calls.append(f"tier:{tier}")
        text = answer(tier)
        if text is None:
            prev = None
            tier += 1
            continue
        read = verifier.read(prompt, text, options)
        kind = read.final.partition(":")[0] if read.final else None
        # Seen by every comparison below: a dearer next tier lowers the bar to accept.
        shift = (
            policy.cost_weight[tier] * cost.z(tier + 1, len(text), len(prompt))
            if tier < top
            else 0.0
        )
        if tier == top or len(w.calls) >= policy.max_calls:
            p = verifier.p_pass(tier, read, p_router[tier], second_read, prev)
            verdict = "top" if tier == top else "cap"
            w.judgements.append(
                Judgement(tier, p, shift, 0.0, _ctx(second_read, prev), verdict, answer_kind=kind)
            )
            w.final = tier
            return w
        p = verifier.p_pass(tier, read, p_router[tier], second_read, prev)
        if p + shift >= policy.accept[tier]:
            w.judgements.append(
                Judgement(
                    tier,
                    p,
                    shift,
                    policy.accept[tier],
                    _ctx(second_read, prev),
                    "accept",
                    answer_kind=kind,
                )
            )
            w.final = tier
            return w
        if second is not None and not second_asked and p + shift >= policy.consult[tier]:
            w.judgements.append(
                Judgement(
                    tier,
                    p,
                    shift,
                    policy.accept[tier],
                    _ctx(second_read, prev),
                    "consult",
                    answer_kind=kind,
                )
            )
            second_asked = True
            w.calls.append("second")
            s_text = second()
            if s_text is not None:
                second_read = verifier.read(prompt, s_text, options)
                p = verifier.p_pass(tier, read, p_router[tier], second_read, prev)
                th = policy.accept_second[tier]
                verdict = "accept" if p + shift >= th else "escalate"
                if verdict == "escalate" and len(w.calls) >= policy.max_calls:
                    verdict = "cap"
                w.judgements.append(
                    Judgement(
                        tier, p, shift, th, _ctx(second_read, prev), verdict, answer_kind=kind
                    )
                )
                if verdict != "escalate":
                    w.final = tier
                    return w
            else:
                verdict = "cap" if len(w.calls) >= policy.max_calls else "escalate"
                th = policy.accept[tier]
                w.judgements.append(
                    Judgement(tier, p, shift, th, "no_second", verdict, answer_kind=kind)
                )
                if verdict == "cap":
                    w.final = tier
                    return w
        else:
            w.judgements.append(
                Judgement(
                    tier,
                    p,
                    shift,
                    policy.accept[tier],
                    _ctx(second_read, prev),
                    "escalate",
                    answer_kind=kind,
                )
            )
        prev = read
        tier += 1
    return w


def _ctx(second: ReadAnswer | None, prev: ReadAnswer | None) -> str:
    return (
        ("both" if prev is not None else "second")
        if second is not None
        else ("prev" if prev is not None else "alone")
    )
