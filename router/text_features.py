"""Hand-written prompt features: cheap signals of difficulty that embeddings blur.

The single definition used both when training and at routing time, so the two can
never disagree. Keyword markers are per-token columns summed together with the static
embedding (see `router.static_embedder`), so they cost nothing extra per request;
symbol markers come from one bytes.translate and a count per class. The result is a
list of Python floats: for one prompt, that is cheaper than any numpy call, and
Python's regex engine would alone spend the routing budget. Scanning is capped at
MAX_SCAN characters.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from types import ModuleType

import numpy as np

from router.compiled import HOTPATH

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
    """A bytes.translate table mapping each byte to its symbol class, and each group's
    classes. A byte in two groups ('=' is code and math) gets a class of its own,
    counted for both.
    """
    codes: dict[tuple[str, ...], int] = {}
    table = bytearray(b" " * 256)
    for byte in range(256):
        groups = tuple(k for k, chars in _SYMBOLS.items() if byte in chars)
        if groups:
            table[byte] = codes.setdefault(groups, ord("A") + len(codes))
    members = [bytes(c for g, c in codes.items() if k in g) for k in _SYMBOLS]
    return bytes(table), members


_CLASS_TABLE, _CLASS_MEMBERS = _class_table()
# For the compiled counter: per byte, bit k set when the byte is in symbol group k.
_GROUP_BITS = bytes(
    sum(1 << k for k, chars in enumerate(_SYMBOLS.values()) if byte in chars) for byte in range(256)
)
_N_GROUPS = len(_SYMBOLS)
_CHOICES = (b"\nA", b"\nB", b"\nC", b"\nD", b"(A)", b"(B)")

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_tokens",
    "subword_share",
    *(f"{k}_keywords" for k in KEYWORDS),
    *(f"{k}_share" for k in _SYMBOLS),
    "choice_options",
)

# Per-token statistics columns: one per keyword group, then subword flag, then 1 (count).
N_TOKEN_STATS = len(KEYWORDS) + 2


def token_stat_columns(vocab: Mapping[str, int]) -> np.ndarray:
    """(vocab, N_TOKEN_STATS) float32: summing rows over a prompt's tokens gives the
    keyword count per group, the number of '##' continuation pieces and the token count.
    """
    cols = np.zeros((max(vocab.values()) + 1, N_TOKEN_STATS), dtype=np.float32)
    cols[:, -1] = 1.0
    for tok, i in vocab.items():
        if tok.startswith("##"):
            cols[i, -2] = 1.0
    for g, words in enumerate(KEYWORDS.values()):
        for w in words:
            j = vocab.get(w)
            if j is not None and not cols[j, : len(KEYWORDS)].any():
                cols[j, g] = 1.0
    return cols


def text_features(
    text: str, token_stats: Sequence[float], *, kernels: ModuleType | None = HOTPATH
) -> list[float]:
    """The len(FEATURE_NAMES) features of one prompt.

    token_stats: the prompt's summed `token_stat_columns` rows.
    """
    raw = text[:MAX_SCAN].encode("utf-8", "surrogatepass")
    n_bytes = max(1, len(raw))
    *keywords, subwords, n_tok = token_stats
    if kernels is not None:
        *groups, choices = kernels.scan_bytes(raw, _GROUP_BITS, _CHOICES)
        counts = groups[:_N_GROUPS]
    else:
        classes = raw.translate(_CLASS_TABLE)
        counts = [sum(map(classes.count, m)) for m in _CLASS_MEMBERS]
        choices = sum(map(raw.count, _CHOICES))
    log1p = math.log1p
    return [
        log1p(len(text)),
        log1p(n_tok),
        subwords / max(1.0, n_tok),
        *map(log1p, keywords),
        *(c / n_bytes for c in counts),
        log1p(choices),
    ]
