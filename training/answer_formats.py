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
