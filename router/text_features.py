"""Hand-written prompt features: cheap signals of difficulty that embeddings blur.

The single definition used both when training and at routing time, so the two can
never disagree. Keyword markers are counted on the WordPiece ids the static path
already computed (one table lookup and a bincount) and symbol markers with
bytes.translate, because Python's regex engine or a loop of str.count calls would
alone spend the whole routing budget. Scanning is capped at MAX_SCAN characters.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence

import numpy as np

MAX_SCAN = 8192

# Keyword groups, matched as whole WordPiece tokens (lowercased).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "code": (
        "def",
        "class",
        "return",
        "import",
        "function",
        "python",
        "java",
        "javascript",
        "sql",
        "code",
        "program",
        "implement",
        "algorithm",
        "array",
        "string",
        "list",
        "int",
        "print",
        "write",
        "loop",
        "variable",
        "compile",
        "bug",
        "regex",
    ),
    "math": (
        "equation",
        "integral",
        "derivative",
        "probability",
        "theorem",
        "prove",
        "proof",
        "polynomial",
        "matrix",
        "modulo",
        "remainder",
        "prime",
        "solve",
        "calculate",
        "compute",
        "sum",
        "product",
        "ratio",
        "percent",
        "integer",
        "fraction",
        "sqrt",
        "frac",
        "log",
        "function",
        "value",
        "number",
        "total",
        "average",
        "cost",
    ),
    "reasoning": (
        "why",
        "explain",
        "justify",
        "reason",
        "reasoning",
        "derive",
        "analyze",
        "analyse",
        "evaluate",
        "infer",
        "implication",
        "implications",
        "assume",
        "assuming",
        "hypothesis",
        "therefore",
        "because",
        "conclude",
        "step",
        "argument",
        "evidence",
        "critically",
        "discuss",
    ),
    "comparison": (
        "compare",
        "comparison",
        "contrast",
        "versus",
        "vs",
        "difference",
        "differences",
        "better",
        "worse",
        "pros",
        "cons",
        "similar",
        "similarities",
        "advantages",
        "disadvantages",
        "tradeoff",
        "tradeoffs",
        "than",
    ),
    "constraint": (
        "must",
        "exactly",
        "least",
        "most",
        "without",
        "only",
        "format",
        "json",
        "table",
        "bullet",
        "words",
        "sentences",
        "concise",
        "brief",
        "detailed",
    ),
    "multi_part": (
        "first",
        "second",
        "third",
        "then",
        "also",
        "additionally",
        "finally",
        "and",
        "each",
        "both",
        "following",
        "steps",
    ),
    "question": ("what", "which", "who", "whom", "when", "where", "how", "whether"),
}
_SYMBOLS = {
    "code_symbols": b"{}();=<>[]_#",
    "math_symbols": b"\\$^+*/=%",
    "question_marks": b"?",
    "newlines": b"\n",
    "digits": string.digits.encode(),
    "upper": string.ascii_uppercase.encode(),
    "non_ascii": bytes(range(128, 256)),
}


def _class_table() -> tuple[bytes, list[bytes]]:
    """One bytes.translate maps every byte to its symbol class; then a count per class.

    A byte in two groups ('=' is code and math) gets its own class, counted for both.
    """
    classes: dict[int, bytes] = {}
    members: dict[str, set[bytes]] = {k: set() for k in _SYMBOLS}
    next_code = ord("A")
    for byte in range(256):
        groups = tuple(k for k, chars in _SYMBOLS.items() if byte in chars)
        if not groups:
            continue
        key = hash(groups)
        if key not in classes:
            classes[key] = bytes([next_code])
            next_code += 1
        for g in groups:
            members[g].add(classes[key])
    table = bytearray(b" " * 256)
    for byte in range(256):
        groups = tuple(k for k, chars in _SYMBOLS.items() if byte in chars)
        if groups:
            table[byte] = classes[hash(groups)][0]
    return bytes(table), [b"".join(sorted(members[k])) for k in _SYMBOLS]


_CLASS_TABLE, _CLASS_MEMBERS = _class_table()
_CHOICES = (b"\nA", b"\nB", b"\nC", b"\nD", b"(A)", b"(B)")

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_tokens",
    "subword_share",
    *(f"{k}_keywords" for k in KEYWORDS),
    *(f"{k}_share" for k in _SYMBOLS),
    "choice_options",
)


_N_GROUPS = len(KEYWORDS) + 1


def keyword_lookup(vocab: Mapping[str, int]) -> np.ndarray:
    """Per-token code: keyword group (0 = none) + _N_GROUPS if a '##' continuation piece.

    One table lets a single bincount give every keyword count and the subword share.
    """
    code = np.zeros(max(vocab.values()) + 1, dtype=np.intp)
    for tok, i in vocab.items():
        if tok.startswith("##"):
            code[i] = _N_GROUPS
    for g, words in enumerate(KEYWORDS.values(), start=1):
        for w in words:
            j = vocab.get(w)
            if j is not None and code[j] == 0:
                code[j] = g
    return code


def text_features(text: str, ids: Sequence[int] | np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Feature vector (float32, len(FEATURE_NAMES)) for one prompt and its token ids."""
    raw = text[:MAX_SCAN].encode("utf-8", "surrogatepass")
    n_bytes = max(1, len(raw))
    n_tok = len(ids)
    counts = np.bincount(lookup.take(ids), minlength=2 * _N_GROUPS).tolist()
    out = [math.log1p(len(text)), math.log1p(n_tok), sum(counts[_N_GROUPS:]) / max(1, n_tok)]
    out.extend(math.log1p(c) for c in counts[1:_N_GROUPS])
    classes = raw.translate(_CLASS_TABLE)
    out.extend(sum(map(classes.count, m)) / n_bytes for m in _CLASS_MEMBERS)
    out.append(math.log1p(sum(map(raw.count, _CHOICES))))
    return np.array(out, dtype=np.float32)
