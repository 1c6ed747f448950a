"""Re-render recorded answers into the formats services ask for, to test the answer reader.

A reader is judged by what it reads staying the same when the same answer is written
another way: the reasoning kept, the final answer restated as a JSON field (valid, or
fenced with raw newlines and single backslashes as models often write it), `\\boxed{}`,
`<answer>` tags, a "Final answer:" line, or bold markdown. Used by
`benchmarks/answer_formats.py` and the reader's tests.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from router.answer_features import prompt_options
from router.answer_reader import read_final

FORMATS = ("json", "json_fenced_raw", "boxed", "answer_tag", "final_answer_line", "markdown")


def surface(key: str, salt: str) -> str:
    """One way a service might print the canonical answer `key` ('kind:value'): the same
    value in varied clothes (choice "C" / "(C)" / "Option C"; number "480" / "$480" /
    "480.0" / "480 units"), picked by a hash of `salt` so a file renders reproducibly."""
    kind, _, value = key.partition(":")
    pick = zlib.crc32(salt.encode("utf-8")) % 4
    if kind == "choice":
        return (value, f"({value})", f"Option {value}", f"{value}")[pick]
    if kind == "number":
        is_int = value.lstrip("-").isdigit()
        if pick == 1 and is_int and not value.startswith("-"):
            return f"${value}"
        if pick == 2 and is_int:
            return f"{value}.0"
        if pick == 3:
            return f"{value} units"
        return value
    return value


def render(reasoning: str, answer: str, fmt: str) -> str:
    """The reply `reasoning` followed by `answer` stated in format `fmt`."""
    body = reasoning.strip()
    if fmt == "json":
        return json.dumps({"reasoning": body, "answer": answer})
    if fmt == "json_fenced_raw":
        # As models write it: raw newlines inside the string, LaTeX backslashes unescaped.
        raw = body.replace('"', '\\"')
        return f'```json\n{{\n    "reasoning": "{raw}",\n    "answer": "{answer}"\n}}\n```'
    if fmt == "boxed":
        return f"{body}\n\nTherefore, the final answer is $\\boxed{{{answer}}}$."
    if fmt == "answer_tag":
        return f"{body}\n<answer>{answer}</answer>"
    if fmt == "final_answer_line":
        return f"{body}\n\nFinal answer: {answer}"
    if fmt == "markdown":
        return f"{body}\n\n**Answer:** **{answer}**"
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


@dataclass
class Reread:
    """Counts of a re-render check: answers seen, readable, and read the same per format."""

    answers: int = 0
    readable: int = 0
    same: Counter[str] = field(default_factory=Counter)

    def share(self, fmt: str) -> float:
        return self.same[fmt] / max(self.readable, 1)


def reread_row(row: dict[str, Any], counts: Reread, rewrite_as: str | None = None) -> None:
    """Read each recorded answer of one outcomes line, restate it in every format and read
    it again, adding to `counts`; with `rewrite_as`, the line's readable answers are
    replaced by their rendering in that format (to train on the re-rendered file)."""
    opts = prompt_options(row["prompt"])
    for model, res in row["results"].items():
        text = res.get("answer")
        if not isinstance(text, str):
            continue
        counts.answers += 1
        found = read_final(text, opts)
        if found is None:
            continue
        counts.readable += 1
        value = surface(found.key, f"{row['id']}/{model}")
        for fmt in FORMATS:
            again = read_final(render(text, value, fmt), opts)
            counts.same[fmt] += again is not None and again.key == found.key
        if rewrite_as is not None:
            res["answer"] = render(text, value, rewrite_as)
