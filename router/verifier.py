"""The answer verifier: P(pass | prompt, this tier's answer), scored in-process.

Per tier and per *context* (what else is known when the answer is judged: nothing, a
second opinion's answer, the answer of the tier below, or both) a logistic regression on
one feature vector: the answer's hand features (router.answer_features), the router's own
P(pass) for the tier as a logit, and for each other answer in the context whether both
committed to a comparable final answer, whether those agree, and the cosine of the two
answers' static embeddings (the fallback for free-form text). Unknown context groups are
zero and carry no weight in the context that lacks them.

The bundle's `verifier.onnx` (input `answer_features` [B, F], output `p_pass`
[B, tiers * contexts], column `tier * CONTEXTS + context`) is generated from the two
arrays in `verifier_weights.npz`; a single answer is scored from those with one dot
product, and load checks the two agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.answer_features import FEATURE_NAMES, agreement, features_and_final
from router.bundle import VERIFIER_FILE, VERIFIER_WEIGHTS, read_arrays

VERIFIER_INPUT = "answer_features"
WEIGHTS, BIAS = "verifier_weights", "verifier_bias"

ALONE, WITH_SECOND, WITH_PREV, WITH_BOTH = range(4)
CONTEXTS = 4
CONTEXT_NAMES = ("alone", "second", "prev", "both")
_PAIR = ("has", "both_final", "agree", "cosine", "len_gap")
VECTOR_NAMES: tuple[str, ...] = (
    *FEATURE_NAMES,
    "router_logit",
    *(f"second_{n}" for n in _PAIR),
    *(f"prev_{n}" for n in _PAIR),
)
N_FEATURES = len(VECTOR_NAMES)
HAND_FEATURES = len(FEATURE_NAMES)
PAIR_FEATURES = len(_PAIR)


@dataclass(frozen=True, eq=False)
class ReadAnswer:
    """An answer read once: its hand features, committed final answer, unit embedding."""

    hand: tuple[float, ...]
    final: str | None
    unit: np.ndarray


def read_answer(
    prompt: str, text: str, options: str, embed: Callable[[str], np.ndarray]
) -> ReadAnswer:
    e = np.asarray(embed(text), dtype=np.float32)
    norm = float(np.linalg.norm(e))
    unit = e / norm if norm > 0 else e
    hand, found = features_and_final(prompt, text, options)
    return ReadAnswer(tuple(hand), None if found is None else found.key, unit)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _pair(a: ReadAnswer, b: ReadAnswer | None) -> list[float]:
    if b is None:
        return [0.0] * len(_PAIR)
    both, agree = agreement(a.final, b.final)
    # hand[0] is log1p(chars): how far apart the two answers' lengths are.
    return [1.0, both, agree, float(a.unit @ b.unit), abs(a.hand[0] - b.hand[0])]


def context_of(second: ReadAnswer | None, prev: ReadAnswer | None) -> int:
    return (WITH_SECOND if second is not None else 0) + (WITH_PREV if prev is not None else 0)


def feature_vector(
    answer: ReadAnswer, p_router: float, second: ReadAnswer | None, prev: ReadAnswer | None
) -> list[float]:
    """The verifier's input for one answer: one definition for training and serving."""
    return [*answer.hand, _logit(p_router), *_pair(answer, second), *_pair(answer, prev)]


@dataclass(frozen=True)
class VerifierSpec:
    """verifier.json: what the weights were fitted on, so a runtime can refuse a mismatch."""

    tiers: tuple[str, ...]
    vector: tuple[str, ...] = VECTOR_NAMES
    contexts: tuple[str, ...] = CONTEXT_NAMES
    fitted: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": "logistic_per_tier_context",
                "tiers": list(self.tiers),
                "vector": list(self.vector),
                "contexts": list(self.contexts),
                "fitted": self.fitted or {},
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> VerifierSpec:
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("kind") != "logistic_per_tier_context":
            raise ValueError(f"{VERIFIER_FILE}: expected kind 'logistic_per_tier_context'")
        spec = cls(
            tiers=tuple(str(t) for t in d.get("tiers", [])),
            vector=tuple(str(v) for v in d.get("vector", [])),
            contexts=tuple(str(c) for c in d.get("contexts", [])),
            fitted=dict(d.get("fitted") or {}),
        )
        if spec.vector != VECTOR_NAMES or spec.contexts != CONTEXT_NAMES:
            raise ValueError(
                f"{VERIFIER_FILE}: the verifier was fitted on another feature set than this "
                "runtime computes; re-train the bundle or install the tier-router it came from"
            )
        return spec


class Verifier:
    """Scores answers with the bundle's verifier weights (numpy; ONNX Runtime checks it)."""

    def __init__(
        self,
        spec: VerifierSpec,
        weights: np.ndarray,
        bias: np.ndarray,
        embed: Callable[[str], np.ndarray],
    ) -> None:
        cols = len(spec.tiers) * CONTEXTS
        if weights.shape != (N_FEATURES, cols) or bias.shape != (cols,):
            raise ValueError(
                f"{VERIFIER_WEIGHTS}: weights {weights.shape} / bias {bias.shape} do not fit "
                f"{len(spec.tiers)} tiers x {CONTEXTS} contexts x {N_FEATURES} features"
            )
        self.spec = spec
        self._w = np.ascontiguousarray(weights.T, dtype=np.float64)  # (cols, F)
        self._b = bias.astype(np.float64)
        self._embed = embed

    @classmethod
    def load(cls, bundle_dir: Path, embed: Callable[[str], np.ndarray]) -> Verifier:
        spec = VerifierSpec.from_json((bundle_dir / VERIFIER_FILE).read_text("utf-8"))
        a = read_arrays(bundle_dir / VERIFIER_WEIGHTS, ("weights", "bias"))
        return cls(spec, a["weights"], a["bias"], embed)

    def read(self, prompt: str, text: str, options: str) -> ReadAnswer:
        return read_answer(prompt, text, options, self._embed)

    def p_pass(
        self,
        tier: int,
        answer: ReadAnswer,
        p_router: float,
        second: ReadAnswer | None = None,
        prev: ReadAnswer | None = None,
    ) -> float:
        """Calibrated P(this tier's answer passes | what is known)."""
        col = tier * CONTEXTS + context_of(second, prev)
        x = np.asarray(feature_vector(answer, p_router, second, prev), dtype=np.float64)
        z = float(self._w[col] @ x + self._b[col])
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def p_pass_matrix(self, x: np.ndarray) -> np.ndarray:
        """(n, tiers * contexts) from (n, F) feature vectors: the graph's math in numpy."""
        z = np.asarray(x, dtype=np.float64) @ self._w.T + self._b
        return 1.0 / (1.0 + np.exp(-z))
