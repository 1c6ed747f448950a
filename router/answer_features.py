"""What an answer's text says about whether it is right: hand features of one answer, and
agreement between two.

General on purpose: nothing here knows a benchmark. The final answer a reply commits to is
read once by `router.answer_reader` (any format: letters, numbers with units, LaTeX, JSON
answer fields, tags, markers) and reused by the features, agreement and logs; free-form
answers compare by embedding similarity (`router.verifier`). Pure standard library, so the
serving path and training share it.
"""

from __future__ import annotations

import ast
import math
import operator
import re

from router.answer_reader import FinalAnswer, format_number, read_final, same_answer

# Options listed in a prompt: lines like "A. ...", "(B) ...", "C) ...".
_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-Z])[.)][ \t]+\S", re.MULTILINE)
# A committed choice: "answer is (C)", "Answer: C", "\boxed{C}", "**C**" on its own line.
_CHOICE = re.compile(
    r"(?:answer\s*(?:is|:)|answer\s+would\s+be|correct\s+(?:option|choice)\s+is|\\boxed\{)"
    r"[*\s]*(?:\(\s*)?([A-Z])\b\)?",
    re.IGNORECASE,
)
_NUMBER = r"-?\$?[ \t]*\d[\d,]*(?:\.\d+)?"
_MARKED_NUMBER = re.compile(
    r"(?:####|answer\s*(?:is|:)|\\boxed\{|final answer[^0-9\-$]{0,12})[*\s]*(" + _NUMBER + ")",
    re.IGNORECASE,
)
_ANY_NUMBER = re.compile(_NUMBER)
_MARKER = re.compile(r"answer\s*(?:is|:)|####|\\boxed\{|final answer", re.IGNORECASE)
_HEDGE = re.compile(
    r"\b(?:maybe|might|perhaps|possibly|not sure|unsure|i think|i believe|likely|unclear|"
    r"it seems|could be|cannot be determined|can't be determined|not enough information|"
    r"guess|approximately)\b",
)
_CORRECTION = re.compile(
    r"\b(?:wait|actually|hmm|let me re\w*|re-?evaluat\w*|re-?check\w*|recalculat\w*|"
    r"mistake|correction|on second thought|i made an error|let's reconsider|however)\b",
)
_REFUSAL = re.compile(
    r"\b(?:i can(?:no|')t|i cannot|i'm unable|i am unable|as an ai|i won't|i will not)\b",
)
_DIGIT = re.compile(r"\d")
_CODE = re.compile(r"```|^[ \t]*(?:def |class |import |return |for |if )", re.MULTILINE)

# Worked arithmetic: "12 * 3 = 36", "<<12*3=36>>". Wrong arithmetic is a failure sign any
# answer that shows its working can give, whatever the task.
# One number (thousands commas only in threes), a term (parenthesised number) and an
# operator gap; each part matches one way, so a long sum that never reaches "=" is
# scanned in linear time (nested optional spaces backtrack exponentially).
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_TERM = r"\(*-?" + _NUM + r"\)*"
_EQUATION = re.compile(
    r"(?<![\w.,])("
    + _TERM
    + r"(?: *[-+*/x\u00d7\u00f7] *"
    + _TERM
    + r")+) *= *\$? *(-?"
    + _NUM
    + r")(?![\d.]*\d)"
)
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_ratio_to_prompt",
    "has_final",
    "final_is_choice",
    "final_is_number",
    "choice_prompt",
    "choice_out_of_range",
    "log_markers",
    "distinct_finals",
    "marker_in_tail",
    "hedges_per_kchar",
    "corrections_per_kchar",
    "refusal",
    "repeated_lines",
    "repeated_ngrams",
    "truncated",
    "ends_with_question",
    "digit_share",
    "equals_per_kchar",
    "log_numbers",
    "has_code",
    "empty",
    "log_equations",
    "wrong_equations",
    "wrong_equation_share",
    "final_is_last_result",
    "final_explicit",
    "final_is_math",
    "final_is_literal",
    "final_is_text",
)


def prompt_options(prompt: str) -> str:
    """Letters of the options a prompt lists ('' when it lists fewer than two)."""
    letters = _OPTION_LINE.findall(prompt[-6000:])
    # Options run A, B, C, ...: keep the longest such run at the end of the prompt.
    run = ""
    for ch in letters:
        run = run + ch if ch == chr(ord("A") + len(run)) else ("A" if ch == "A" else "")
    return run if len(run) >= 2 else ""


def _norm_number(text: str) -> str | None:
    s = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    return format_number(v) if math.isfinite(v) else None


def final_answer(answer: str, options: str) -> str | None:
    """The answer's committed final answer as 'kind:value' ('choice:C', 'number:42',
    'math:x^2+1', 'literal:[1,2]', 'text:paris'), or None when it commits to nothing
    comparable (router.answer_reader has the rules)."""
    found = read_final(answer, options)
    return None if found is None else found.key


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.left), _eval(node.right)))
    raise ValueError("not arithmetic")


def check_arithmetic(answer: str) -> tuple[int, int, str | None]:
    """(equations checked, how many are wrong, the last one's result) of the worked
    arithmetic in an answer. A result may be rounded to its own precision."""
    checked = wrong = 0
    last = None
    for m in _EQUATION.finditer(answer[-8000:]):
        expr = m.group(1).strip().replace(",", "").replace("x", "*").replace("\u00d7", "*")
        expr = expr.replace("\u00f7", "/")
        try:
            value = _eval(ast.parse(expr, mode="eval").body)
            result = float(m.group(2).replace(",", ""))
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, RecursionError):
            continue
        decimals = len(m.group(2).split(".")[1]) if "." in m.group(2) else 0
        tol = max(0.5 * 10.0**-decimals, 1e-6 * abs(value))
        checked += 1
        wrong += abs(value - result) > tol + 1e-9
        last = _norm_number(m.group(2))
    return checked, wrong, last


def _repetition(answer: str) -> tuple[float, float]:
    lines = [ln.strip() for ln in answer.splitlines() if ln.strip()]
    rep_lines = 1.0 - len(set(lines)) / len(lines) if len(lines) > 1 else 0.0
    words = answer.split()
    if len(words) < 16:
        return rep_lines, 0.0
    grams = list(zip(words, words[1:], words[2:], words[3:], words[4:], words[5:], strict=False))
    return rep_lines, 1.0 - len(set(grams)) / len(grams)


def answer_features(prompt: str, answer: str, options: str | None = None) -> list[float]:
    """Hand features of one answer to one prompt, in FEATURE_NAMES order."""
    return features_and_final(prompt, answer, options)[0]


def features_and_final(
    prompt: str, answer: str, options: str | None = None
) -> tuple[list[float], FinalAnswer | None]:
    """The hand features and the final answer, reading the answer once."""
    opts = prompt_options(prompt) if options is None else options
    found = read_final(answer, opts)
    return _features(prompt, answer, opts, found), found


def _features(prompt: str, answer: str, opts: str, found: FinalAnswer | None) -> list[float]:
    n = len(answer)
    k = max(n, 1) / 1000.0
    final = None if found is None else found.key
    markers = list(_MARKER.finditer(answer))
    if opts:
        distinct = {c.upper() for c in _CHOICE.findall(answer)}
        out_of_range = any(c not in opts for c in distinct)
    else:
        distinct = {x for x in (_norm_number(m) for m in _MARKED_NUMBER.findall(answer)) if x}
        out_of_range = False
    rep_lines, rep_grams = _repetition(answer)
    stripped = answer.rstrip()
    truncated = (
        bool(stripped)
        and stripped[-1] not in ".!?)]}\"'`*$>"
        and not stripped[-1].isdigit()
        and final is None
    )
    digits = len(_DIGIT.findall(answer))
    low = answer.lower()  # the word lists below are lower case
    checked, wrong, last_result = check_arithmetic(answer)
    return [
        math.log1p(n),
        math.log1p(n) - math.log1p(len(prompt)),
        float(final is not None),
        float(final is not None and final.startswith("choice:")),
        float(final is not None and final.startswith("number:")),
        float(bool(opts)),
        float(out_of_range),
        math.log1p(len(markers)),
        float(max(len(distinct) - 1, 0)),
        float(bool(markers) and markers[-1].start() >= 0.8 * n),
        len(_HEDGE.findall(low)) / k,
        len(_CORRECTION.findall(low)) / k,
        float(bool(_REFUSAL.search(low[:400]))),
        rep_lines,
        rep_grams,
        float(truncated),
        float(stripped.endswith("?")),
        digits / max(n, 1),
        answer.count("=") / k,
        math.log1p(len(_ANY_NUMBER.findall(answer))),
        float(bool(_CODE.search(answer))),
        float(not stripped),
        math.log1p(checked),
        float(wrong > 0),
        wrong / checked if checked else 0.0,
        float(last_result is not None and final == "number:" + last_result),
        float(found is not None and found.explicit),
        float(found is not None and found.kind == "math"),
        float(found is not None and found.kind == "literal"),
        float(found is not None and found.kind == "text"),
    ]


def agreement(final_a: str | None, final_b: str | None) -> tuple[float, float]:
    """(both committed to a comparable final answer, they mean the same). An unreadable
    answer is unknown (0, 0), never a disagreement (1, 0)."""
    same = same_answer(final_a, final_b)
    return float(same is not None), float(bool(same))
