"""WordPiece in standard ONNX operators, for words the text graph's vocabulary lacks.

ONNX has no substring operator, so a word's characters are recovered one letter class
at a time: StringSplit at a letter gives pieces whose lengths (RegexFullMatch bit tests)
place every occurrence of that letter. With the word as a row of character codes, every
candidate piece from the current position is a polynomial hash (int64, wrapping), and
LabelEncoders keyed by the hashes of the WordPiece vocabulary (word-initial and '##'
pieces) find the longest match: greedy longest-match-first, as router.wordpiece does,
for at most STEPS pieces. Words with a character outside ALPHABET, or longer than the
tokenizer's limit, read as one [UNK]; so does a word no piece sequence covers (as in
Python).
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from training.text_graph import TextGraph

ALPHABET = string.ascii_lowercase + string.digits
MAX_CHARS = 100  # router.wordpiece's max_input_chars_per_word default
STEPS = 8  # pieces per word; a longer word keeps its first STEPS pieces
_BASE = np.int64(0x5BD1E995)  # odd multiplier of the piece hash
_CODE_BITS = 7  # piece lengths (between two letters of one class) below 128


def extra_letters(chunks: list[str], vocab: dict[str, int], n: int) -> str:
    """The `n` commonest characters of `chunks` beyond ALPHABET that Python's tokenizer
    keeps as they are inside a word (not punctuation, not changed by its accent
    stripping or lowercasing, not CJK) and that some WordPiece piece contains."""
    from collections import Counter

    from router.wordpiece import _clean, _is_punct

    in_pieces = {c for tok in vocab for c in tok.removeprefix("##")}
    seen: Counter[str] = Counter(c for chunk in chunks for c in chunk if not c.isascii())
    keep = [
        c
        for c, _ in seen.most_common()
        if c in in_pieces
        and not _is_punct(c)
        and not c.isspace()
        and c.lower() == c
        and _clean(c) == c
    ]
    return "".join(keep[:n])


def _powers() -> np.ndarray:
    p = np.ones(MAX_CHARS, dtype=np.int64)
    with np.errstate(over="ignore"):
        for i in range(1, MAX_CHARS):
            p[i] = p[i - 1] * _BASE
    return p


POWERS = _powers()


def piece_hash(piece: str, alphabet: str = ALPHABET) -> int | None:
    """The graph's hash of a vocabulary piece (None: a character outside `alphabet`)."""
    if not piece or len(piece) > MAX_CHARS or any(c not in alphabet for c in piece):
        return None
    codes = np.array([alphabet.index(c) + 1 for c in piece], dtype=np.int64)
    with np.errstate(over="ignore"):
        return int((codes * POWERS[: len(codes)]).sum(dtype=np.int64))


def hash_tables(
    vocab: dict[str, int], alphabet: str = ALPHABET
) -> tuple[dict[int, int], dict[int, int]]:
    """(hash -> id) of the word-initial pieces and of the '##' pieces (prefix dropped)."""
    initial: dict[int, int] = {}
    cont: dict[int, int] = {}
    for tok, i in vocab.items():
        table, piece = (cont, tok[2:]) if tok.startswith("##") else (initial, tok)
        h = piece_hash(piece, alphabet)
        if h is not None:
            table.setdefault(h, i)
    return initial, cont


def wordpiece_rows(
    g: TextGraph,
    words: str,
    token_rows: str,
    vocab: dict[str, int],
    unk_id: int,
    zero_id: int,
) -> str:
    """float [m, W]: the summed token rows of each (lowercased) word of `words` [m]."""
    codes, length, alive = char_codes(g, words)
    return greedy_rows(g, codes, length, alive, (token_rows, vocab, unk_id, zero_id))


def char_codes(g: TextGraph, words: str) -> tuple[str, str, str]:
    """(int64 [m, MAX_CHARS + 1] character codes (1 + index in ALPHABET, 0 for any other
    character), int64 [m] lengths, bool [m]: every character in ALPHABET and at most
    MAX_CHARS of them) of the words [m]."""
    from onnx import TensorProto

    from training.text_graph import length_bit_pattern

    i64 = g.i64
    n_cols = MAX_CHARS + 1  # the last column takes writes that fall outside the word
    m = g.op("Slice", [g.op("Shape", [words]), i64(0), i64(1)])
    length = g.op(
        "Cast",
        [g.bits(words, [length_bit_pattern(b) for b in range(_CODE_BITS)])],
        to=TensorProto.INT64,
    )
    too_long = g.op("RegexFullMatch", [words], pattern=f"(?s).{{{MAX_CHARS + 1},}}")
    # A word over the limit is [UNK] whatever its letters: do not split it letter by letter.
    words = g.op("Where", [too_long, g.const(np.array([""], dtype=object), "empty"), words])
    codes = g.op(
        "ConstantOfShape", [g.op("Concat", [m, i64(n_cols)], axis=0)], value=_i64_tensor(0)
    )
    for code, c in enumerate(g.alphabet, 1):
        pieces, n = g.split(words, c)
        lens = g.op(
            "Cast",
            [g.bits(pieces, [length_bit_pattern(b) for b in range(_CODE_BITS)])],
            to=TensorProto.INT64,
        )
        at = g.op("Sub", [g.op("CumSum", [g.op("Add", [lens, i64(1)]), i64(1)]), i64(1)])
        k = g.op(
            "Range",
            [
                i64(0),
                g.op("Squeeze", [g.op("Slice", [g.op("Shape", [pieces]), i64(1), i64(2)])]),
                i64(1),
            ],
        )
        real = g.op(
            "Less",
            [g.op("Unsqueeze", [k, i64(0)]), g.op("Unsqueeze", [g.op("Sub", [n, i64(1)]), i64(1)])],
        )
        at = g.op("Min", [g.op("Where", [real, at, i64(MAX_CHARS)]), i64(MAX_CHARS)])
        value = g.op("Expand", [i64(code), g.op("Shape", [at])])
        codes = g.op("ScatterElements", [codes, at, value], axis=1)
    in_word = g.op("Less", [_cols(g), g.op("Unsqueeze", [length, i64(1)])])
    body = g.op("Slice", [codes, i64(0), i64(MAX_CHARS), i64(1)])
    unknown_char = g.op(
        "ReduceMax",
        [
            g.op(
                "Cast",
                [g.op("And", [in_word, g.op("Equal", [body, i64(0)])])],
                to=TensorProto.INT64,
            ),
            i64(1),
        ],
        keepdims=0,
    )
    alive = g.op("And", [g.op("Not", [too_long]), g.op("Equal", [unknown_char, i64(0)])])
    return codes, length, alive


def _cols(g: TextGraph) -> str:
    return g.const(np.arange(MAX_CHARS, dtype=np.int64)[None, :], "cols")


def greedy_rows(
    g: TextGraph,
    codes: str,
    length: str,
    alive: str,
    tokens: tuple[str, dict[str, int], int, int],
) -> str:
    """float [m, W]: greedy longest-match-first WordPiece over each row of character codes
    (its first `length` codes), as summed token rows; [UNK] where not `alive` or where no
    piece matches (and nothing for an empty word)."""

    token_rows, vocab, unk_id, zero_id = tokens
    i64 = g.i64
    m = g.op("Slice", [g.op("Shape", [length]), i64(0), i64(1)])
    cols = _cols(g)
    initial, cont = hash_tables(vocab, g.alphabet)

    def encoder(table: dict[int, int]) -> dict[str, Any]:
        keys = sorted(table)
        return {"keys_int64s": keys, "values_int64s": [table[k] for k in keys], "default_int64": -1}

    powers = g.const(POWERS[None, :], "powers")
    pos = g.op("ConstantOfShape", [m], value=_i64_tensor(0))
    failed = g.op("Equal", [pos, i64(1)])  # all false
    rows = ""
    for _ in range(STEPS):
        idx = g.op("Min", [g.op("Add", [g.op("Unsqueeze", [pos, i64(1)]), cols]), i64(MAX_CHARS)])
        sub = g.op("GatherElements", [codes, idx], axis=1)
        inside = g.op(
            "Less",
            [
                g.op("Add", [g.op("Unsqueeze", [pos, i64(1)]), cols]),
                g.op("Unsqueeze", [length, i64(1)]),
            ],
        )
        h = g.op("CumSum", [g.op("Mul", [sub, powers]), i64(1)])
        flat = g.op("Reshape", [h, i64(-1)])
        shape = g.op("Shape", [h])
        first = g.op(
            "Reshape",
            [g.op("LabelEncoder", [flat], domain="ai.onnx.ml", **encoder(initial)), shape],
        )
        later = g.op(
            "Reshape", [g.op("LabelEncoder", [flat], domain="ai.onnx.ml", **encoder(cont)), shape]
        )
        ids = g.op(
            "Where", [g.op("Unsqueeze", [g.op("Equal", [pos, i64(0)]), i64(1)]), first, later]
        )
        ok = g.op("And", [g.op("GreaterOrEqual", [ids, i64(0)]), inside])
        best = g.op(
            "ReduceMax",
            [g.op("Where", [ok, g.op("Add", [cols, i64(1)]), i64(0)]), i64(1)],
            keepdims=0,
        )
        active = g.op(
            "And", [alive, g.op("And", [g.op("Less", [pos, length]), g.op("Not", [failed])])]
        )
        found = g.op("Greater", [best, i64(0)])
        failed = g.op("Or", [failed, g.op("And", [active, g.op("Not", [found])])])
        emit = g.op("And", [active, found])
        pick = g.op("Unsqueeze", [g.op("Max", [g.op("Sub", [best, i64(1)]), i64(0)]), i64(1)])
        tok = g.op("Squeeze", [g.op("GatherElements", [ids, pick], axis=1), i64(1)])
        tok = g.op("Where", [emit, tok, i64(zero_id)])
        row = g.op("Gather", [token_rows, tok])
        rows = g.op("Add", [rows, row]) if rows else row
        pos = g.op("Add", [pos, g.op("Where", [emit, best, i64(0)])])
    empty = g.op("Equal", [length, i64(0)])
    ok_word = g.op("Or", [g.op("And", [alive, g.op("Not", [failed])]), empty])
    unk_row = g.op("Gather", [token_rows, i64(unk_id)])
    return g.op("Where", [g.op("Unsqueeze", [ok_word, i64(1)]), rows, unk_row])


def _i64_tensor(v: int) -> object:
    from onnx import TensorProto, helper

    return helper.make_tensor("value", TensorProto.INT64, [1], [v])
