"""Replay a bundle's cascade over recorded answers, offline, without reading any score.

For every prompt of the split and every operating point of the bundle (its own `policy`
and the sweep in cascade.json), router.cascade.walk runs with the recorded answers in
place of Bedrock calls. One JSON line per (prompt, point) says which outcomes keys were
called, in order, and whose answer was returned: the replay contract of the design doc,
graded from outside by ../shared/tools/cascadeval.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from outcomes import OutcomeRecord, read_outcomes
from router import Router
from router.cascade import CascadePolicy, walk
from router.verifier import ReadAnswer, Verifier
from training.recorded_answers import answer_text


class _MemoVerifier(Verifier):
    """Reads each recorded answer once, however many operating points look at it."""

    def __init__(self, base: Verifier) -> None:
        self.__dict__.update(base.__dict__)
        self._memo: dict[tuple[str, str], ReadAnswer] = {}

    def read(self, prompt: str, text: str, options: str) -> ReadAnswer:
        key = (prompt, text)
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = super().read(prompt, text, options)
        return got

    def forget(self) -> None:
        self._memo.clear()


@dataclass(frozen=True)
class ReplayLine:
    id: str
    point: str
    calls: list[str]
    final: str | None

    def to_json(self) -> str:
        return json.dumps(
            {"id": self.id, "point": self.point, "calls": self.calls, "final": self.final}
        )


def replayable(rec: OutcomeRecord, keys: list[str]) -> bool:
    return all(answer_text(rec, k) is not None for k in keys)


def replay_records(
    router: Router, records: list[OutcomeRecord], points: list[CascadePolicy] | None = None
) -> Iterator[ReplayLine]:
    if router.verifier is None or router.cascade is None:
        raise ValueError(
            f"{router.source}: the bundle has no cascade (it was trained on outcomes without "
            "answer texts); train on a file whose results carry 'answer' to replay"
        )
    ladder = router.ladder
    keys = [t.outcomes_key for t in ladder.tiers]
    second = ladder.second_opinion
    chosen = points or [router.cascade.policy, *router.cascade.points]
    verifier = _MemoVerifier(router.verifier)
    p_all = (
        router.p_pass_batch([r.prompt for r in records]) if records else np.zeros((0, len(keys)))
    )
    for rec, p in zip(records, p_all.tolist(), strict=True):
        texts = [answer_text(rec, k) for k in keys]
        s_text = answer_text(rec, second.outcomes_key) if second is not None else None
        recorded = texts.__getitem__
        second_fn = (lambda s=s_text: s) if s_text is not None else None
        for point in chosen:
            w = walk(
                point,
                router.cascade.cost,
                verifier,
                rec.prompt,
                p,
                recorded,
                second_fn,
            )
            calls = [
                second.outcomes_key if c == "second" and second is not None else keys[int(c[5:])]
                for c in w.calls
            ]
            yield ReplayLine(
                rec.id, point.label, calls, keys[w.final] if w.final is not None else None
            )
        verifier.forget()


def replay_file(router: Router, outcomes: Path, split: str | None, out: Path) -> tuple[int, int]:
    """Write the replay of `split`; returns (prompts replayed, prompts skipped for lack of
    a recorded answer on some tier)."""
    keys = [t.outcomes_key for t in router.ladder.tiers]
    recs = read_outcomes(outcomes, split, scores=False)
    keep = [r for r in recs if replayable(r, keys)]
    with out.open("w", encoding="utf-8") as f:
        for line in replay_records(router, keep):
            f.write(line.to_json() + "\n")
    return len(keep), len(recs) - len(keep)
