"""The answers an outcomes file recorded for each prompt, read once for the cascade's fits.

Replay and the system curve read the same fields, so what counts as a recorded answer and
what a call costs (the design doc's cost model) are defined here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from outcomes import OutcomeRecord
from router.answer_features import prompt_options
from router.ladder import Ladder, Tier
from router.tokens import CHARS_PER_TOKEN, prompt_tokens
from router.verifier import ReadAnswer, read_answer
from training.evaluate import DEFAULT_OUTPUT_TOKENS

ANSWER_FIELD = "answer"
MIN_ANSWERED = 50  # prompts with every tier's answer needed to fit a cascade


@dataclass(frozen=True)
class AnswerSet:
    """Recorded answers of the labelled prompts, read once (same rows as the LabelSet)."""

    reads: list[list[ReadAnswer | None]]  # (n, tiers)
    second: list[ReadAnswer | None] | None  # (n,) when the ladder has a second opinion
    second_cost: np.ndarray  # (n,) dollars of the second opinion's call (0 without one)

    @property
    def complete(self) -> np.ndarray:
        """Rows where every tier (and the second opinion, if any) has an answer."""
        ok = np.array([all(r is not None for r in row) for row in self.reads], dtype=bool)
        if self.second is not None:
            ok &= np.array([s is not None for s in self.second], dtype=bool)
        return ok


def answer_text(rec: OutcomeRecord, key: str) -> str | None:
    r = rec.results.get(key)
    a = None if r is None else r.extra.get(ANSWER_FIELD)
    return a if isinstance(a, str) else None


def call_cost(prompt: str, rec: OutcomeRecord, tier: Tier) -> float:
    """The outcomes file's cost model for one call (design doc): chars/4 in, recorded out."""
    r = rec.results.get(tier.outcomes_key)
    out = DEFAULT_OUTPUT_TOKENS
    if r is not None and r.output_tokens is not None:
        out = float(r.output_tokens)
    elif r is not None and r.output_chars:
        out = float(r.output_chars) / CHARS_PER_TOKEN
    return tier.cost_usd(prompt_tokens(len(prompt)), out)


def has_answers(records: Sequence[OutcomeRecord], ladder: Ladder) -> bool:
    """Whether enough prompts carry every tier's answer to fit a verifier."""
    n = sum(all(answer_text(r, t.outcomes_key) for t in ladder.tiers) for r in records)
    return n >= MIN_ANSWERED


def read_answers(
    records: Sequence[OutcomeRecord],
    ids: Sequence[str],
    ladder: Ladder,
    embed: Callable[[str], np.ndarray],
    cache: dict[str, list[ReadAnswer | None]] | None = None,
) -> AnswerSet:
    """Every answer of the ladder's tiers (and second opinion) read once; `cache` (outcomes
    key -> reads in `ids` order) keeps the reads for another ladder over the same rows."""
    by_id = {r.id: r for r in records}
    cache = {} if cache is None else cache

    def column(key: str) -> list[ReadAnswer | None]:
        if key not in cache:
            col: list[ReadAnswer | None] = []
            for pid in ids:
                rec = by_id.get(pid)  # rows without a record (a table's) have no answers
                text = None if rec is None else answer_text(rec, key)
                if rec is None or text is None:
                    col.append(None)
                    continue
                col.append(read_answer(rec.prompt, text, prompt_options(rec.prompt), embed))
            cache[key] = col
        return cache[key]

    cols = [column(t.outcomes_key) for t in ladder.tiers]
    reads = [list(row) for row in zip(*cols, strict=True)]
    second = None
    cost2 = np.zeros(len(ids))
    if ladder.second_opinion is not None:
        second = column(ladder.second_opinion.outcomes_key)
        for i, pid in enumerate(ids):
            if (rec2 := by_id.get(pid)) is not None:
                cost2[i] = call_cost(rec2.prompt, rec2, ladder.second_opinion)
    return AnswerSet(reads, second, cost2)
