"""Labels from outcomes: per-tier scores, the cheapest passing tier, and auxiliary models.

Missing results stay NaN (unknown, never guessed as a fail). A prompt that no tier
passed gets cheapest_pass = -1 ("none"): its per-tier labels are all failures, which
teaches the model that no tier helps there, and the policy then spends least.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from outcomes import PASS_THRESHOLD, OutcomeRecord
from router.ladder import Ladder
from router.tokens import CHARS_PER_TOKEN


@dataclass(frozen=True)
class LabelSet:
    ids: list[str]
    prompts: list[str]
    scores: np.ndarray  # (n, tiers) in [0, 1], NaN where the tier's result is missing
    aux_models: list[str]  # other models in the file, extra signal of difficulty
    aux_scores: np.ndarray  # (n, len(aux_models)), NaN where missing
    output_tokens: np.ndarray  # (n, tiers) recorded or estimated output tokens
    dropped: int  # records with no result for any tier
    weights: np.ndarray | None = None  # (n, tiers) inverse-propensity weights, 1 = plain
    # Benchmark category per prompt ("" when unknown): a training label for the model's
    # category head, never an input (a request carries no category).
    tasks: tuple[str, ...] = ()
    # Prompt lengths in characters, when some rows have no text (a log that kept the
    # router's features, not the prompt: its `prompts` entry is ""); None: len(prompts[i]).
    chars: np.ndarray | None = None

    @property
    def prompt_chars(self) -> np.ndarray:
        """(n,) int64: each prompt's length in characters (what input costs are priced by)."""
        if self.chars is not None:
            return self.chars
        return np.array([len(p) for p in self.prompts], dtype=np.int64)

    @property
    def passed(self) -> np.ndarray:
        """(n, tiers) 1.0 pass / 0.0 fail / NaN unknown."""
        return np.where(np.isnan(self.scores), np.nan, (self.scores >= PASS_THRESHOLD) * 1.0)

    @property
    def cheapest_pass(self) -> np.ndarray:
        """Index of the cheapest tier that passed, -1 when none passed (or none known)."""
        p = np.nan_to_num(self.passed, nan=0.0) > 0
        return np.where(p.any(axis=1), p.argmax(axis=1), -1)

    def __len__(self) -> int:
        return len(self.ids)


def output_tokens_of(rec: OutcomeRecord, key: str, default: float = 200.0) -> float:
    """Recorded output tokens, else chars/4, else `default`; NaN when the tier has no result.

    A recorded 0 (an empty answer) stays 0: only a missing field falls back. The shared
    grader ../shared/tools/routeval.py reads a recorded 0 as missing, so the two differ
    only there (in the public files, one mmlu_pro result with output_chars 0).
    """
    r = rec.results.get(key)
    if r is None:
        return float("nan")
    if r.output_tokens is not None:
        return float(r.output_tokens)
    if r.output_chars is not None:
        return float(r.output_chars) / CHARS_PER_TOKEN
    return default


def build_labels(
    records: Sequence[OutcomeRecord], ladder: Ladder, *, min_tiers: int = 1
) -> LabelSet:
    """Keep records with at least `min_tiers` tier results; the rest are counted as dropped."""
    keys = [t.outcomes_key for t in ladder.tiers]
    keyset = set(keys)
    aux = sorted({m for r in records for m in r.results} - keyset)
    ids, prompts, scores, aux_rows, out_tok, weights, tasks = [], [], [], [], [], [], []
    dropped = 0
    for r in records:
        row = [r.results[k].score if k in r.results else np.nan for k in keys]
        if sum(not np.isnan(x) for x in row) < min_tiers:
            dropped += 1
            continue
        ids.append(r.id)
        prompts.append(r.prompt)
        scores.append(row)
        aux_rows.append([r.results[m].score if m in r.results else np.nan for m in aux])
        out_tok.append([output_tokens_of(r, k) for k in keys])
        weights.append([_ipw(r, k) for k in keys])
        tasks.append(r.task or "")
    n = len(ids)
    return LabelSet(
        ids=ids,
        prompts=prompts,
        scores=np.array(scores, dtype=np.float64).reshape(n, len(keys)),
        aux_models=aux,
        aux_scores=np.array(aux_rows, dtype=np.float64).reshape(n, len(aux)),
        output_tokens=np.array(out_tok, dtype=np.float64).reshape(n, len(keys)),
        dropped=dropped,
        weights=np.array(weights, dtype=np.float64).reshape(n, len(keys)),
        tasks=tuple(tasks),
    )


def _ipw(rec: OutcomeRecord, key: str) -> float:
    """Inverse-propensity weight a serving feedback label carries (1 when absent).

    Labels from explored requests (sent a tier lower than decided, with a logged
    propensity) stand for all the requests that were not explored; weighting them by
    1/propensity keeps the cheaper tiers' rates from being estimated only on the prompts
    the old router already thought easy.
    """
    r = rec.results.get(key)
    w = r.extra.get("ipw") if r is not None else None
    if isinstance(w, int | float) and not isinstance(w, bool) and 0 < w < 1e6:
        return float(w)
    return 1.0


def missing_tier_report(labels: LabelSet, ladder: Ladder) -> dict[str, int]:
    """How many kept prompts lack each tier's result (they are masked, not guessed)."""
    miss = np.isnan(labels.scores).sum(axis=0)
    return {t.name: int(m) for t, m in zip(ladder.tiers, miss, strict=True)}
