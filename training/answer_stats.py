"""How well the answer reader reads a file's replies: per tier, the share with a readable
final answer and the agreement rate with the second opinion.

A reader that misses a reply format silently turns the cascade off (no agreement is ever
found, so the second opinion is never worth its call), so `train` and `evaluate` report
these figures and warn when replies state an answer that cannot be read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from outcomes import OutcomeRecord
from router.answer_features import prompt_options
from router.answer_reader import read_final, same_answer, states_answer
from router.ladder import Ladder
from training.recorded_answers import answer_text

log = logging.getLogger(__name__)

# Warn when more than this share of a tier's replies state an answer the reader cannot read.
UNREAD_WARN = 0.05


def reading_report(records: Sequence[OutcomeRecord], ladder: Ladder) -> dict[str, Any]:
    """Per tier (and the second opinion): replies, share readable, share that state an
    answer but cannot be read, and the share of both-readable pairs agreeing with the
    second opinion. Logs a warning for a tier whose stated answers go unread."""
    members = [*ladder.tiers, *([ladder.second_opinion] if ladder.second_opinion else [])]
    counts = {
        t.name: {"replies": 0, "readable": 0, "unread_stated": 0, "both": 0, "agree": 0}
        for t in members
    }
    example: dict[str, str] = {}
    for rec in records:
        opts = prompt_options(rec.prompt)
        finals = {}
        for t in members:
            text = answer_text(rec, t.outcomes_key)
            if text is None:
                continue
            found = read_final(text, opts)
            c = counts[t.name]
            c["replies"] += 1
            c["readable"] += found is not None
            if found is None and states_answer(text):
                c["unread_stated"] += 1
                example.setdefault(t.name, text[-160:])
            finals[t.name] = found
        second = finals.get(ladder.second_opinion.name) if ladder.second_opinion else None
        for t in ladder.tiers:
            same = same_answer(finals.get(t.name), second)
            if same is not None:
                counts[t.name]["both"] += 1
                counts[t.name]["agree"] += same
    out: dict[str, Any] = {}
    for name, c in counts.items():
        n = max(c["replies"], 1)
        row: dict[str, Any] = {
            "replies": c["replies"],
            "readable": round(c["readable"] / n, 4),
            "stated_unreadable": round(c["unread_stated"] / n, 4),
        }
        if ladder.second_opinion is not None and name != ladder.second_opinion.name:
            row["agree_with_second"] = round(c["agree"] / c["both"], 4) if c["both"] else None
        out[name] = row
        if c["replies"] and c["unread_stated"] / n > UNREAD_WARN:
            log.warning(
                "%s: %.0f%% of replies state an answer the reader cannot read (e.g. ...%r); "
                "the cascade cannot compare those answers: see docs/answers.md",
                name,
                100 * c["unread_stated"] / n,
                example.get(name, ""),
            )
    return out
