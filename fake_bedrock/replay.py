"""Answer replay: each prompt answered as the outcomes file recorded it.

For a prompt found in an outcomes file the answer has the recorded output length,
truncated with `stopReason: max_tokens` past `maxTokens`. Whether that answer passed is
not in the text; a validator that knows the record looks it up (`OutcomeIndex.passed`).
A result that carries the model's `answer` text is answered with that text (cut at
`maxTokens`), so a verifier in the client judges real answers. A record that carries a
`reference` answer (an extra field of the outcomes file) is answered with that reference
on its last line when the recorded model passed, and with a wrong answer when it failed,
so a grader reproduces the recorded verdict. Unknown prompts get seeded filler text.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from outcomes import ModelResult, OutcomeRecord
from router.ladder import Ladder, Tier
from router.tokens import estimate_tokens

DEFAULT_OUTPUT_TOKENS = 200


def recorded_output_tokens(result: ModelResult) -> int:
    """A model's output length in tokens as the outcomes contract estimates it."""
    if result.output_tokens is not None:
        return max(1, math.ceil(result.output_tokens))
    if result.output_chars is not None:
        return max(1, estimate_tokens(int(result.output_chars)))
    return DEFAULT_OUTPUT_TOKENS


class OutcomeIndex:
    """Outcome records by prompt text, and each ladder model's recorded pass/fail."""

    def __init__(self, records: Iterable[OutcomeRecord], ladder: Ladder) -> None:
        self.ladder = ladder
        self.by_prompt: dict[str, OutcomeRecord] = {}
        for r in records:
            self.by_prompt.setdefault(r.prompt, r)
        self.tier_by_model: dict[str, Tier] = {t.model_id: t for t in ladder.tiers}
        if ladder.second_opinion is not None:
            self.tier_by_model.setdefault(ladder.second_opinion.model_id, ladder.second_opinion)

    def __len__(self) -> int:
        return len(self.by_prompt)

    def result(self, prompt: str, model_id: str) -> ModelResult | None:
        rec = self.by_prompt.get(prompt)
        tier = self.tier_by_model.get(model_id)
        if rec is None or tier is None:
            return None
        return rec.results.get(tier.outcomes_key)

    def passed(self, prompt: str, model_id: str) -> bool | None:
        """The recorded verdict for this model on this prompt; None if unknown."""
        r = self.result(prompt, model_id)
        return None if r is None else r.passed


@dataclass(frozen=True)
class Reply:
    """A scripted answer (tests use these to produce any stop reason or text); `content`
    adds blocks after the text, e.g. `{"toolUse": {...}}` for a tool call."""

    text: str
    stop_reason: str = "end_turn"
    output_tokens: int | None = None
    content: tuple[Mapping[str, Any], ...] = ()

    def blocks(self) -> list[dict[str, Any]]:
        head = [{"text": self.text}] if self.text or not self.content else []
        return head + [dict(b) for b in self.content]


@dataclass(frozen=True)
class ErrorReply:
    """A scripted Bedrock error."""

    status: int
    code: str
    message: str = "scripted error"


Responder = Callable[[str, Mapping[str, Any]], Reply | ErrorReply | None]


def recorded_reply(index: OutcomeIndex, prompt: str, tier: Tier, max_tokens: int) -> Reply:
    """The answer `tier` gave `prompt` as recorded (or filler), within `max_tokens`."""
    result = index.result(prompt, tier.model_id)
    seed = f"{tier.model_id}\n{prompt}"
    if result is None:
        n = min(120, max_tokens)
        return Reply(_filler(seed, n * 4, "Here is a short answer."), "end_turn", n)
    n = recorded_output_tokens(result)
    recorded = result.extra.get("answer")
    if isinstance(recorded, str) and recorded.strip():
        # The model's real answer, so a verifier judges what the model really wrote.
        if n > max_tokens:
            return Reply(recorded[: max_tokens * 4], "max_tokens", max_tokens)
        return Reply(recorded, "end_turn", n)
    if n > max_tokens:
        return Reply(_filler(seed, max_tokens * 4, "Working through it."), "max_tokens", max_tokens)
    chars = int(result.output_chars) if result.output_chars is not None else n * 4
    rec = index.by_prompt.get(prompt)
    if rec is not None and "reference" in rec.extra:
        ref = rec.extra["reference"]
        final = "\nAnswer: " + (_answer_text(ref) if result.passed else wrong_answer(ref))
        body = _filler(seed, max(chars - len(final), 1), "Working through it.")
        return Reply(body + final, "end_turn", n)
    return Reply(_filler(seed, max(chars, 1), "Working through it."), "end_turn", n)


def _answer_text(ref: Any) -> str:
    return ref if isinstance(ref, str) else json.dumps(ref)


def wrong_answer(ref: Any) -> str:
    """A deterministic answer that differs from `ref` in the way a grader checks it:
    another option letter, another number, broken JSON, or an unrelated phrase."""
    text = _answer_text(ref).strip()
    if re.fullmatch(r"[A-Za-z]", text):
        letters = "ABCDEFGHIJ" if text.upper() in "ABCDEFGHIJ" else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        return letters[(letters.index(text.upper()) + 1) % len(letters)]
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return f"{value + 1:g}"
    if text[:1] in "{[":
        return text[: max(1, len(text) // 2)]
    return "none of these"


def digest(s: str) -> str:
    """A stable key for a text (seeds and cache prefixes)."""
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


_WORDS = [
    "the",
    "answer",
    "follows",
    "from",
    "the",
    "given",
    "values",
    "so",
    "we",
    "compute",
    "each",
    "step",
    "and",
    "compare",
    "options",
    "carefully",
    "then",
    "check",
    "units",
    "and",
    "state",
    "the",
    "result",
    "clearly",
    "with",
    "reasoning",
]


def _filler(seed: str, chars: int, lead: str) -> str:
    rng = random.Random(digest(seed))
    parts = [lead]
    size = len(lead)
    while size < chars:
        w = rng.choice(_WORDS)
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts)[: max(chars, 1)]
