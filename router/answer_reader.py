"""One reader of final answers: a reply's text -> the canonical answer it commits to.

Replies come in whatever format the caller asked for: a choice letter in any phrasing, a
number with units, LaTeX, a JSON object with `reasoning` and `answer` fields (fenced or
bare, often not strictly valid JSON), `<answer>` tags, "Final answer:", "####", bold
markdown, code literals, short free text. The cascade compares final answers across
models, so every consumer (answer features, agreement, logs, labeling graders) reads them
here, once per reply, and compares canonical values: "$480" = "480.00" = "four hundred
eighty", "\\frac{1}{2}" = "1/2" = "0.5", "'abc'" = "abc", "[1, 2]" = "(1,2)" only where
both are lists. A reply with no readable final answer gives None ("unknown"), never a
guess that would look like a disagreement.

Bounded work on any input: no regex here backtracks, every scan is a single pass or is
capped in length, and nested values are parsed only up to a fixed size. Pure standard
library (the router's runtime depends on nothing else).
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any

CHOICE, NUMBER, MATH, LITERAL, TEXT = "choice", "number", "math", "literal", "text"
# Where the answer was found, strongest first. Explicit sources are the reply's own
# statement of its answer; `last_number` and `short_reply` are fallbacks.
EXPLICIT_SOURCES = ("field", "tag", "boxed", "hashes", "marker", "bold")

_MAX_VALUE = 4000  # characters of one answer span that are parsed at all
_MAX_LITERAL = 2000  # characters handed to ast.literal_eval / json.loads
_MAX_WORDS = 12  # a free-text answer longer than this is not a comparable final answer
_MAX_TRIES = 64  # occurrences of a key or marker word tried, from the last one back
_WINDOW = 12_000  # characters at the end of a long reply searched for its stated answer
_HEAD = 2_000  # and at its start, for an answer field that comes first


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """A canonical final answer: `kind` (choice, number, math, literal, text), its
    canonical `value`, and the `source` in the reply it was read from."""

    kind: str
    value: str
    source: str

    @property
    def key(self) -> str:
        """'kind:value', the form logs and equality use."""
        return f"{self.kind}:{self.value}"

    @property
    def explicit(self) -> bool:
        return self.source in EXPLICIT_SOURCES


def same_answer(a: FinalAnswer | str | None, b: FinalAnswer | str | None) -> bool | None:
    """Whether two final answers mean the same; None when either is unknown."""
    ka = a.key if isinstance(a, FinalAnswer) else a
    kb = b.key if isinstance(b, FinalAnswer) else b
    if ka is None or kb is None:
        return None
    if ka == kb:
        return True
    if ka.startswith("number:") and kb.startswith("number:"):
        try:
            x, y = float(ka[7:]), float(kb[7:])
        except ValueError:
            return False
        return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
    return False


# -- where a reply states its answer -----------------------------------------------------------

# Answer-like keys of a JSON or Python object; the first group wins over the second.
_KEY = re.compile(r"""(["'])([\w ]{1,20})\1[ \t]*:[ \t\r\n]*""")
_PRIMARY_KEYS = (
    "finalanswer",
    "final_answer",
    "final answer",
    "answer",
    "correct_answer",
    "correct answer",
    "choice",
    "selected_option",
    "selected option",
)
_SECONDARY_KEYS = ("final", "result", "output", "solution", "prediction")
_TAGS = ("answer", "final_answer", "final", "result")
_HASHES = re.compile(r"^[ \t]*####[ \t]*([^\n]+)", re.MULTILINE)
# "Final answer: X", "The answer is X", "answer = X", "correct option is X". The span is
# the rest of the line after the marker (or the next line when that is empty).
_MARKER = re.compile(  # matched on lower-cased text at an occurrence of its first word
    r"(?:answer|correct option|correct choice)[ \t]*"
    r"(?:(?:is|would\s+be|will\s+be|should\s+be)\b[ \t]*[:\uff1a]?|[:=\uff1a])"
)
_BOLD = re.compile(r"\*\*([^*\n]{1,80})\*\*")
# A number standing alone ("29", "$1,200.50", "94%"), not part of a word ("1990s", "H2O").
_NUMBER_TOKEN = re.compile(
    r"(?<![\w.])(?:-?\$?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?%?|-?\.\d+)(?![A-Za-z\d])"
)
_BOXED = ("\\boxed", "\\fbox")


def read_final(
    text: str, options: str = "", option_texts: dict[str, str] | None = None
) -> FinalAnswer | None:
    """The final answer `text` commits to, canonical, or None when it commits to none.

    `options`: the letters a multiple-choice prompt lists ('' for an open question); then
    only a choice letter (or an option's own text, given `option_texts`) is an answer.
    The reply's structured answer wins (an answer field, tag, box, "####" line or an
    "answer is" marker, the last one stated), then bold text near the end, then fallbacks:
    a short reply is its own answer, else the last number of the tail.
    """
    if not text or not text.strip():
        return None
    for source, span, value in _spans(text):
        found = _canonical(span, value, options, option_texts, source)
        if found is not None:
            return found
    return _fallback(text, options)


def _spans(text: str) -> list[tuple[str, str, Any]]:
    """Candidate answer spans, strongest first: (source, text span, parsed JSON value)."""
    out: list[tuple[str, str, Any]] = []
    if len(text) > _WINDOW:
        # A long reply states its answer at its end, or (a JSON object with the answer
        # first) at its start: look there, so the work is bounded whatever the length.
        head = text[:_HEAD]
        text = text[-_WINDOW:]
        low = _lower(text)
        field = _field_value(text, low) or _field_value(head, _lower(head))
    else:
        low = _lower(text)
        field = _field_value(text, low)
    if field is not None:
        out.append(("field", *field))
    stated: list[tuple[int, str, str]] = []  # (position, source, span)
    tag = _last_tag(text, low)
    if tag is not None:
        stated.append((tag[0], "tag", tag[1]))
    box = _last_boxed(text)
    if box is not None:
        stated.append((box[0], "boxed", box[1]))
    hashes = None
    if "####" in text:
        for m in _HASHES.finditer(text):
            hashes = m
    if hashes is not None:
        stated.append((hashes.start(), "hashes", hashes.group(1)))
    marker = _last_marker(text, low)
    if marker is not None:
        stated.append((marker[0], "marker", marker[1]))
    for _, source, span in sorted(stated, key=lambda s: -s[0]):
        out.append((source, span, _NO_VALUE))
    tail_start = max(0, len(text) - 600)
    bold = None
    for m in _BOLD.finditer(text, tail_start):
        bold = m
    if bold is not None:
        out.append(("bold", bold.group(1), _NO_VALUE))
    return out


_NO_VALUE: Any = object()
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lower(text: str) -> str:
    """Lower case with the same length as `text` (positions are shared between the two):
    str.lower() lengthens a few characters, such as 'İ'."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def _field_value(text: str, low: str) -> tuple[str, Any] | None:
    """The value of the last answer-like key of a JSON / Python object in the text (a
    primary key such as "answer" wins over "result" or "output")."""
    for keys in (_PRIMARY_KEYS, _SECONDARY_KEYS):
        best = -1
        end = 0
        for key in keys:
            for q in "\"'":
                at = low.rfind(q + key + q)
                for _ in range(_MAX_TRIES):
                    if at < 0:
                        break
                    m = _KEY.match(text, at)
                    if m is not None:
                        if at > best:
                            best, end = at, m.end()
                        break
                    at = low.rfind(q + key + q, 0, at)
        if best >= 0:
            return _scan_value(text, end)
    return None


def _scan_value(text: str, i: int) -> tuple[str, Any] | None:
    """(span, parsed value) of the JSON-ish value starting at text[i]; tolerant of raw
    newlines in strings, single quotes, trailing commas and Python literals."""
    if i >= len(text):
        return None
    c = text[i]
    if c in "\"'":
        end = _string_end(text, i)
        if end is None:
            return None
        raw = text[i + 1 : end]
        return raw, _unescape(raw)
    if c in "[{(":
        end = _bracket_end(text, i)
        if end is None:
            return None
        span = text[i : end + 1]
        return span, _literal(span)
    j = i
    stop = min(len(text), i + _MAX_VALUE)
    while j < stop and text[j] not in ",}\n]":
        j += 1
    span = text[i:j].strip()
    if not span:
        return None
    word = {"true": True, "false": False, "null": None, "none": None}
    if span.lower() in word:
        return span, word[span.lower()]
    return span, _NO_VALUE


def _string_end(text: str, i: int) -> int | None:
    """Index of the quote closing the string opened at text[i]: the next unescaped same
    quote followed (after blanks) by `,`, `}`, `]`, a newline or the end."""
    quote = text[i]
    j = i + 1
    stop = min(len(text), i + 1 + 4 * _MAX_VALUE)
    while j < stop:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == quote:
            k = j + 1
            while k < len(text) and text[k] in " \t\r":
                k += 1
            if k >= len(text) or text[k] in ",}]\n":
                return j
        j += 1
    return None


def _bracket_end(text: str, i: int) -> int | None:
    """Index of the bracket closing the one at text[i] (strings skipped), bounded."""
    pairs = {"[": "]", "{": "}", "(": ")"}
    stack = [pairs[text[i]]]
    j = i + 1
    stop = min(len(text), i + _MAX_VALUE)
    quote = ""
    while j < stop:
        c = text[j]
        if quote:
            if c == "\\":
                j += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in pairs:
            stack.append(pairs[c])
        elif c == stack[-1]:
            stack.pop()
            if not stack:
                return j
        j += 1
    return None


# JSON escapes that are also the start of LaTeX commands written with one backslash.
_LATEX_N = ("neq", "ne", "not", "nabla", "neg", "nu", "ni", "nmid", "ngeq", "nleq", "newline")
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
}


def _unescape(raw: str) -> str:
    """A JSON string's body, decoded leniently: escapes that begin a LaTeX command
    (\\frac, \\times, \\boxed, \\neq) and unknown escapes keep their backslash."""
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = raw[i + 1]
        if e == "u" and i + 6 <= n:
            try:
                out.append(chr(int(raw[i + 2 : i + 6], 16)))
                i += 6
                continue
            except ValueError:
                pass
        if e in "tbfr" and i + 2 < n and raw[i + 2].isalpha():
            out.append("\\" + e)  # \times, \boxed, \frac, \right
        elif e == "n" and i + 2 < n and raw[i + 2].isalpha() and _latex_n(raw, i + 1):
            out.append("\\n")
        elif e in _ESCAPES:
            out.append(_ESCAPES[e])
        else:
            out.append("\\" + e)
        i += 2
    return "".join(out)


def _latex_n(raw: str, i: int) -> bool:
    j = i
    while j < len(raw) and j - i < 10 and raw[j].isalpha():
        j += 1
    return raw[i:j] in _LATEX_N


def _literal(span: str) -> Any:
    """A bracketed value as JSON or a Python literal; _NO_VALUE when it is neither."""
    if len(span) > _MAX_LITERAL:
        return _NO_VALUE
    try:
        return json.loads(span)
    except (ValueError, RecursionError):
        pass
    body = re.sub(r",\s*([}\]])", r"\1", span)  # trailing commas
    try:
        return ast.literal_eval(body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NO_VALUE


def _last_tag(text: str, low: str) -> tuple[int, str] | None:
    at, name = max((low.rfind(f"<{t}>"), t) for t in _TAGS)
    if at < 0:
        return None
    start = at + len(name) + 2
    close = low.find(f"</{name}>", start)
    return at, text[start : close if close >= 0 else start + 400]


def _last_boxed(text: str) -> tuple[int, str] | None:
    at = max(text.rfind(b) for b in _BOXED)
    if at < 0:
        return None
    j = at + 1
    while j < len(text) and text[j].isalpha():
        j += 1
    while j < len(text) and text[j] == " ":
        j += 1
    if j < len(text) and text[j] == "{":
        body = _braced(text, j)
        return (at, body) if body is not None else None
    m = re.match(r"[^\s$]+", text[j : j + 100])  # \boxed 5
    return (at, m.group(0)) if m else None


def _braced(text: str, i: int) -> str | None:
    """The body of the brace group opening at text[i] (nested braces kept), bounded."""
    depth = 0
    stop = min(len(text), i + _MAX_VALUE)
    for j in range(i, stop):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def _last_marker(text: str, low: str) -> tuple[int, str] | None:
    """The last "answer is X" / "Answer: X" / "correct option is X" and the rest of its
    line (or the next line when that is empty)."""
    best = None
    for word in ("answer", "correct option", "correct choice"):
        at = low.rfind(word)
        for _ in range(_MAX_TRIES):
            if at < 0 or (best is not None and at < best.start()):
                break
            m = _MARKER.match(low, at)
            if m is not None:
                best = m
                break
            at = low.rfind(word, 0, at)
    if best is None:
        return None
    rest = text[best.end() : best.end() + 400]
    line, _, after = rest.partition("\n")
    line = line.strip(" \t*:_")
    if not line:
        nxt = after.lstrip("\n")
        line = nxt.partition("\n")[0]
    return best.start(), line


# -- canonical values ----------------------------------------------------------------------------


def _canonical(
    span: str, value: Any, options: str, option_texts: dict[str, str] | None, source: str
) -> FinalAnswer | None:
    if options:
        letter = _letter(
            span if value is _NO_VALUE or not isinstance(value, str) else value,
            options,
            option_texts,
        )
        return FinalAnswer(CHOICE, letter, source) if letter else None
    if value is not _NO_VALUE and not isinstance(value, str):
        lit = _literal_value(value)
        return FinalAnswer(*lit, source) if lit else None
    text = value if isinstance(value, str) else span
    found = canonical_value(text)
    if found is None or found[0] == TEXT:
        found = _sentence_value(text, source) or found
    return FinalAnswer(*found, source) if found else None


def _sentence_value(text: str, source: str) -> tuple[str, str] | None:
    """The value a stated answer that is a sentence commits to: its own marker or box
    ({"answer": "The answer is 18"}), a number that opens it ("18, since ..."), or its one
    number when it is short ("She earns $18 a day")."""
    if source in ("field", "tag") and len(text) < _MAX_VALUE:
        inner = _spans(text)
        for src, span, value in inner:
            if src in ("boxed", "hashes", "marker"):
                found = _canonical(span, value, "", None, src)
                if found is not None and found.kind != TEXT:
                    return found.kind, found.value
    head = _HEAD_CUT.split(_strip_wrappers(text[:200]), maxsplit=1)[0]
    n = parse_number(head) if head else None
    if n is not None:
        return NUMBER, format_number(n)
    words = text.split()
    if len(words) <= 8:
        numbers = _NUMBER_TOKEN.findall(text)
        if len(numbers) == 1:
            n = parse_number(numbers[0])
            if n is not None:
                return NUMBER, format_number(n)
    return None


_HEAD_CUT = re.compile(r",\s|;|\s(?:because|since|which|as|so|per|for|and)\s|\s\(|\.\s")


def canonical_value(text: str) -> tuple[str, str] | None:
    """(kind, canonical value) of one stated answer, outside a multiple-choice prompt."""
    s = _strip_wrappers(text[:_MAX_VALUE])
    if not s:
        return None
    n = parse_number(s)
    if n is not None:
        return NUMBER, format_number(n)
    if s[0] in "[({'\"" or s in ("True", "False", "None"):
        value = _literal(s)
        if value is not _NO_VALUE:
            return _literal_value(value)
    if _looks_math(s):
        v = _eval_latex(s)
        if v is not None:
            return NUMBER, format_number(v)
        return MATH, _math_form(s)
    return _text_value(s)


def _literal_value(value: Any) -> tuple[str, str] | None:
    if isinstance(value, bool) or value is None:
        return LITERAL, repr(value)
    if isinstance(value, int | float):
        return (NUMBER, format_number(float(value))) if math.isfinite(value) else None
    if isinstance(value, str):
        inner = canonical_value(value) if value.strip() else None
        return inner if inner is not None else (TEXT, "")
    try:
        return LITERAL, _literal_repr(value, 0)
    except (ValueError, RecursionError):
        return None


def _literal_repr(v: Any, depth: int) -> str:
    if depth > 20:
        raise ValueError("too deep")
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int | float):
        return format_number(float(v)) if math.isfinite(v) else repr(v)
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ",".join(_literal_repr(x, depth + 1) for x in v) + "]"
    if isinstance(v, set | frozenset):
        return "{" + ",".join(sorted(_literal_repr(x, depth + 1) for x in v)) + "}"
    if isinstance(v, dict):
        items = sorted(
            f"{_literal_repr(k, depth + 1)}:{_literal_repr(x, depth + 1)}" for k, x in v.items()
        )
        return "{" + ",".join(items) + "}"
    raise ValueError(f"not a literal: {type(v).__name__}")


_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|operatorname|mbox|fbox|boxed)\s*\{([^{}]*)\}"
)
_SPACES = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")


def _strip_wrappers(s: str) -> str:
    """The answer without markdown, math delimiters, \\boxed/\\text wrappers and the
    punctuation that closes a sentence."""
    s = s.strip()
    for _ in range(3):
        before = s
        if s.startswith("```") and s.endswith("```") and len(s) > 6:
            body = s[3:-3]
            first, nl, rest = body.partition("\n")
            s = rest if nl and re.fullmatch(r"[\w+-]*", first.strip()) else body
        s = s.strip().strip("*_`").strip()
        for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(a) and s.endswith(b) and len(s) > len(a) + len(b) - 1:
                s = s[len(a) : len(s) - len(b)].strip()
        s = s.rstrip(" .;,:").strip()
        if s.startswith("\\boxed") or s.startswith("\\fbox"):
            box = _last_boxed(s)
            if box is not None:
                s = box[1].strip()
        if s == before:
            break
    return s


_CURRENCY = "$€£¥₹"
_NUM_RE = re.compile(
    r"([-+\u2212]?)\s*[$€£¥₹]?\s*(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s*(?:[eE]([-+]?\d+)|(?:\\times|\u00d7|x|\*)\s*10\s*\^\s*\{?\s*([-+\u2212]?\d+)\s*\}?))?"
)
_MIXED = re.compile(r"(\d+)\s+(\d+)\s*/\s*(\d+)")
_UNIT_WORD = re.compile(r"[A-Za-z\u00b5\u03bc°][A-Za-z\u00b5\u03bc°.'/²³-]*")
_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ]
    )
}
_TENS = {
    w: 10 * (i + 2)
    for i, w in enumerate(
        ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
    )
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def parse_number(s: str) -> float | None:
    """A number that is the whole answer: signs, currency, thousands separators, decimals,
    fractions (a/b), percentages, scientific notation, number words, a leading `x =` and up
    to three unit words after it ("$1,234.50", "94%", "1 hour", "3/4 cup", "-2.5e3",
    "twenty-one"). None when the text is more than a number."""
    t = s.strip().replace("\u2212", "-")
    t = re.sub(r"^[A-Za-z]\w{0,2}\s*=\s*", "", t)  # x = 5, ans = 5
    t = t.replace("\\$", "$").replace("\\%", "%").replace("\\!", "").replace("{,}", ",")
    t = re.sub(r"\^\s*\{?\\circ\}?|\\circ|°", " ", t).strip()
    mixed = _MIXED.fullmatch(t)
    if mixed:  # 24 2/3
        whole, num, den = (float(g) for g in mixed.groups())
        return whole + num / den if den else None
    m = _NUM_RE.match(t)
    if m is None:
        return _number_words(t)
    value = _num_from(m)
    if value is None:
        return None
    rest = t[m.end() :].strip()
    frac = re.match(r"/\s*(\d+(?:\.\d+)?)", rest)
    if frac and "," not in m.group(2) and m.group(3) is None and m.group(4) is None:
        den = float(frac.group(1))
        if den == 0:
            return None
        value /= den
        rest = rest[frac.end() :].strip()
    rest = rest.lstrip("%").strip()
    if rest.startswith("\\"):
        rest = re.sub(r"\\(?:text|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", rest).strip()
        if "\\" in rest:  # 2\pi, 3\sqrt{2}: more than a number
            return None
    if not rest:
        return value
    words = rest.split()
    if len(words) <= 3 and all(_UNIT_WORD.fullmatch(w.strip(".,;")) for w in words):
        return value
    return None


def _num_from(m: re.Match[str]) -> float | None:
    try:
        v = float(m.group(2).replace(",", ""))
    except ValueError:
        return None
    exp = m.group(3) or m.group(4)
    if exp is not None:
        try:
            v *= 10.0 ** int(exp.replace("\u2212", "-"))
        except (ValueError, OverflowError):
            return None
    v = -v if m.group(1) == "-" else v
    return v if math.isfinite(v) else None


def _number_words(t: str) -> float | None:
    words = t.lower().replace("-", " ").replace(",", " ").split()
    if not words or len(words) > 8:
        return None
    total = current = 0
    seen = False
    for w in words:
        if w == "and" and seen:
            continue
        if w in _WORDS:
            current += _WORDS[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w in _SCALES and seen:
            current = max(current, 1) * _SCALES[w]
            if _SCALES[w] >= 1000:
                total, current = total + current, 0
        else:
            return None
        seen = True
    return float(total + current) if seen else None


def format_number(v: float) -> str:
    """Canonical text of a number: integers without a decimal point, else 6 significant
    digits (so 0.333333 = 1/3, 2.50 = 2.5)."""
    if v == 0:
        return "0"
    if abs(v) < 1e15 and abs(v - round(v)) <= 1e-9 * max(1.0, abs(v)):
        return str(round(v))
    return f"{v:.6g}"


_MATHY = re.compile(r"\\[a-zA-Z]+|[\^_{}]|\d\s*/\s*\d|sqrt|\bpi\b")


_PROSE = re.compile(r"(?<!\\)\b[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")


def _looks_math(s: str) -> bool:
    """A formula, not a sentence: math markup or operators, and no two words in a row
    outside `\\text{}`."""
    if len(s) > 300 or _PROSE.search(_WRAPPERS.sub("", s)):
        return False
    return bool(_MATHY.search(s)) or bool(re.fullmatch(r"[-+*/().\d\s]+", s))


_LATEX_SUBS = (
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\\left|\\right|\\displaystyle|\\bigl|\\bigr|\\big|\\Big"), ""),
    (re.compile(r"\\cdot|\\times|\u00d7"), "*"),
    (re.compile(r"\\div|\u00f7"), "/"),
    (re.compile(r"\^\s*\{?\\circ\}?|\\circ|°|\\%|%|\\\$|\$"), ""),
)


def _math_form(s: str) -> str:
    """A LaTeX answer in one spelling: \\dfrac -> \\frac, no sizing, spacing or units
    markup, \\frac12 -> \\frac{1}{2}, no blanks, a leading `x=` dropped."""
    t = _SPACES.sub("", s)
    t = _WRAPPERS.sub(r"\1", t)
    for pat, rep in _LATEX_SUBS:
        t = pat.sub(rep, t)
    t = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", t)
    t = re.sub(r"\\sqrt\s*(\d+)", r"\\sqrt{\1}", t)
    t = re.sub(r"^[a-zA-Z]\s*=\s*", "", t)
    t = re.sub(r"\s+", "", t)
    if t.startswith("\\{") and t.endswith("\\}"):  # a set: order does not matter
        t = "\\{" + ",".join(sorted(t[2:-2].split(","))) + "\\}"
    return t


_EVAL_TOKENS = re.compile(r"\d+(?:\.\d+)?|sqrt|pi|[-+*/^()]")


def _eval_latex(s: str) -> float | None:
    """The value of a LaTeX or plain arithmetic expression made of numbers, + - * / ^,
    \\frac, \\sqrt and \\pi; None for anything else (variables, sets, intervals)."""
    form = _math_form(s)
    if len(form) > 120:
        return None
    t = _latex_expr(form)
    if t is None or re.search(r"[a-z]", t.replace("sqrt", "").replace("pi", "")):
        return None
    tokens = _EVAL_TOKENS.findall(t)
    if "".join(tokens) != t:
        return None
    # Implicit products: 2sqrt(3), 2pi, )( .
    expr: list[str] = []
    for tok in tokens:
        if expr and expr[-1][-1].isdigit() and tok[0].isdigit():
            return None  # "24 2/3": two numbers side by side are not a product
        if (
            expr
            and (expr[-1][-1].isdigit() or expr[-1] in (")", "pi"))
            and (tok in ("sqrt", "pi", "(") or tok[0].isdigit())
        ):
            expr.append("*")
        expr.append("**" if tok == "^" else tok)
    try:
        tree = ast.parse("".join(expr), mode="eval")
        v = _ast_value(tree.body, 0)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return v if math.isfinite(v) else None


def _latex_expr(t: str) -> str | None:
    """\\frac{a}{b} -> ((a)/(b)), \\sqrt{a} -> sqrt(a), \\pi -> pi, braces -> parentheses;
    None at any other command."""
    out: list[str] = []
    i = 0
    while i < len(t):
        if t.startswith("\\frac", i) or t.startswith("\\sqrt", i):
            name, i = t[i + 1 : i + 5], i + 5
            args = []
            for _ in range(2 if name == "frac" else 1):
                body, i = _group(t, i)
                inner = None if body is None else _latex_expr(body)
                if inner is None:
                    return None
                args.append(inner)
            out.append(f"(({args[0]})/({args[1]}))" if name == "frac" else f"sqrt({args[0]})")
        elif t.startswith("\\pi", i):
            out.append("pi")
            i += 3
        elif t[i] == "\\":
            return None
        else:
            out.append({"{": "(", "}": ")"}.get(t[i], t[i]))
            i += 1
    return "".join(out)


def _group(t: str, i: int) -> tuple[str | None, int]:
    """The argument of a command at t[i]: a brace group or one character."""
    if i >= len(t):
        return None, i
    if t[i] == "{":
        body = _braced(t, i)
        return (body, i + len(body) + 2) if body is not None else (None, i)
    return t[i], i + 1


def _ast_value(node: ast.AST, depth: int) -> float:
    if depth > 40:
        raise ValueError("too deep")
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id == "pi":
        return math.pi
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _ast_value(node.operand, depth + 1)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sqrt":
        if len(node.args) != 1:
            raise ValueError("sqrt takes one argument")
        v = _ast_value(node.args[0], depth + 1)
        if v < 0:
            raise ValueError("negative root")
        return math.sqrt(v)
    if isinstance(node, ast.BinOp):
        a, b = _ast_value(node.left, depth + 1), _ast_value(node.right, depth + 1)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.Div):
            return a / b
        if isinstance(node.op, ast.Pow):
            if abs(b) > 64 or abs(a) > 1e6:
                raise ValueError("power too large")
            return float(a**b)
    raise ValueError("not arithmetic")


_PUNCT = re.compile(r"[^\w\s]")


def _text_value(s: str) -> tuple[str, str] | None:
    """A short free-text answer, normalised (case, punctuation, articles), or None."""
    t = _PUNCT.sub(" ", s.lower())
    words = [w for w in t.split() if w not in ("a", "an", "the")]
    if not words or len(words) > _MAX_WORDS:
        return None
    return TEXT, " ".join(words)


# -- choice letters --------------------------------------------------------------------------

_LETTER_SPAN = re.compile(
    r"^(?:option|choice|answer)?\s*[:\s]*[(\[]?\s*([A-Za-z])\s*[)\].:]?(?:\s|$)", re.IGNORECASE
)
_LETTER_ANY = re.compile(r"\(([A-Z])\)|\b(?:option|choice)\s+\(?([A-Z])\b", re.IGNORECASE)
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.)]\s+(\S[^\n]*)$", re.MULTILINE)


def option_texts(prompt: str) -> dict[str, str]:
    """Each listed option's canonical value, for answers that state the option's text."""
    out: dict[str, str] = {}
    for m in _OPTION_LINE.finditer(prompt[-6000:]):
        found = canonical_value(m.group(2))
        if found is not None:
            out.setdefault(m.group(1), f"{found[0]}:{found[1]}")
    return out


def _letter(span: str, options: str, texts: dict[str, str] | None) -> str | None:
    s = _strip_wrappers(span)
    if not s:
        return None
    m = _LETTER_SPAN.match(s)
    if m and m.group(1).upper() in options:
        # "C", "(C)", "C. Paris", "Option C"; but not a word that starts with a letter.
        letter = m.group(1)
        if letter.isupper() or len(s) <= 3:
            return letter.upper()
    for m2 in _LETTER_ANY.finditer(s[:300]):
        letter = (m2.group(1) or m2.group(2)).upper()
        if letter in options:
            return letter
    if texts:
        found = canonical_value(s)
        if found is not None:
            key = f"{found[0]}:{found[1]}"
            hits = [k for k, v in texts.items() if v == key and k in options]
            if len(hits) == 1:
                return hits[0]
    return None


_TRAILING_LETTER = re.compile(r"\(?\b([A-Z])\b\)?[.\s*]*$")


def _fallback(text: str, options: str) -> FinalAnswer | None:
    tail = text.strip()[-300:]
    if options:
        m = _TRAILING_LETTER.search(tail[-40:])
        if m and m.group(1) in options:
            return FinalAnswer(CHOICE, m.group(1), "last_letter")
        return None
    stripped = text.strip()
    # A reply that is only an answer ("42", "Paris", "[1, 2]"), not a short calculation.
    if len(stripped) <= 80 and "\n" not in stripped and "=" not in stripped:
        found = canonical_value(stripped)
        if found is not None:
            return FinalAnswer(*found, "short_reply")
    last = None
    for m in _NUMBER_TOKEN.finditer(tail):
        last = m
    if last is not None:
        n = parse_number(last.group(0))
        if n is not None:
            return FinalAnswer(NUMBER, format_number(n), "last_number")
    return None


def states_answer(text: str) -> bool:
    """Whether the reply states an answer somewhere (an answer field, tag, box, "####" line,
    "answer is" marker or bold text), readable or not: a reply that states one but gives
    None from `read_final` is a format this reader misses."""
    return bool(text) and bool(_spans(text))
