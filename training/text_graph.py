"""The whole fast router as one ONNX graph: prompt text in, P(pass) per tier and the tier out.

Services in Node, Java, Go or C# run it with their ONNX Runtime binding and get the same
decisions as `Router.route` without reimplementing the featurizer. Every step uses
standard operators (opset 20 string operators and ai.onnx.ml LabelEncoder):

- whitespace: one StringSplit per Unicode whitespace character Python's `str.split`
  knows, flattening the pieces in text order; each piece's length in code points comes
  from RegexFullMatch bit tests, so the head/tail window of `window_text` is placed on
  exact character offsets (pieces over 2**LENGTH_BITS characters are approximated);
- lowercasing: StringNormalizer (its table differs from Python's for a few letters, e.g.
  dotted capital I; the vocabulary is keyed by what StringNormalizer produces);
- tokenization and pooling: a LabelEncoder maps each lowercased chunk to a row holding
  the exact sum of its WordPiece tokens' [static vector | token statistics]. The graph
  cannot run WordPiece itself, so chunks outside the exported vocabulary (the
  tokenizer's whole words plus the chunks of the outcomes files given at export) count
  as one [UNK] token: the approximation docs/onnx_router.md measures. A chunk cut by the
  window contributes its row in proportion to the characters kept;
- hand features: symbol counts by StringSplit with an explicit delimiter (count = pieces
  - 1), UTF-8 byte counts from per-chunk RegexFullMatch bit tests over three code point
  ranges; the MAX_SCAN cap of router.text_features is not applied (prompts over 8192
  characters are approximated);
- the joint space, the softmax sets (training.onnx_graph) and the threshold policy.
"""

from __future__ import annotations

import json
import string
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from router.joint_space import EPS
from router.router import Router
from router.text_features import _CHOICES, _SYMBOLS, FEATURE_NAMES, KEYWORDS
from training.onnx_graph import GraphBuilder
from training.text_graph_wordpiece import (
    ALPHABET,
    MAX_CHARS,
    char_codes,
    extra_letters,
    greedy_rows,
    wordpiece_rows,
)

TEXT_INPUT = "text"
P_PASS_OUTPUT = "p_pass"
TIER_OUTPUT = "tier"
RUN_BATCH = 16
NAMES_OUTPUT = "tier_names"  # the ladder's names, cheapest first (bindings without metadata)
OPSET = 20
ML_OPSET = 4  # LabelEncoder with string keys and int64 values
IR_VERSION = 10
LENGTH_BITS = 9  # chunk lengths are exact below 512 characters
MAX_EXTRA_PUNCT = 32  # non-ASCII punctuation characters split off (commonest first)
MAX_EXTRA_LETTERS = 16  # non-ASCII characters the graph's WordPiece reads (commonest first)
COUNT_BITS = 7  # non-ASCII characters per chunk are exact below 128
WORD_TOKENS = 4  # token ids stored per word; longer words keep the rest as one summed row
LOCALE = "C.UTF-8"  # StringNormalizer's locale; glibc has it built in
# Every character str.split() splits on, newline and space first (the commonest: each
# split multiplies the padded width by the most pieces one element has).
WHITESPACE: tuple[str, ...] = (
    "\n",
    " ",
    *(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() and c not in "\n "),
)
_NON_ASCII = (("\u0080", "\u07ff", 2), ("\u0800", "\uffff", 3), ("\U00010000", "\U0010ffff", 4))


def _dots(n: int, optional: bool = False) -> str:
    """`.{n}` (or `.{0,n}`) within RE2's repetition limit of 1000."""
    parts = []
    while n > 0:
        k = min(n, 1000)
        parts.append(f".{{0,{k}}}" if optional else f".{{{k}}}")
        n -= k
    return "".join(parts)


def length_bit_pattern(bit: int) -> str:
    """Full-matches a string whose length in code points has `bit` set."""
    half = 1 << bit
    return f"(?s)(?:{_dots(2 * half)})*{_dots(half)}{_dots(half - 1, True)}"


def count_bit_pattern(bit: int, lo: str, hi: str) -> str:
    """Full-matches a string whose number of code points in [lo, hi] has `bit` set."""
    half = 1 << bit
    one = f"[^{lo}-{hi}]*[{lo}-{hi}]"
    tail = f"(?:{one}){{0,{half - 1}}}" if half > 1 else ""
    return f"(?s)(?:(?:{one}){{{2 * half}}})*(?:{one}){{{half}}}{tail}[^{lo}-{hi}]*"


class TextGraph(GraphBuilder):
    """GraphBuilder with the string and integer helpers the text graph needs;
    `alphabet`: the characters its WordPiece reads (text_graph_wordpiece)."""

    alphabet: str = ALPHABET

    def i64(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64), "i64")

    def f32(self, value: float | np.ndarray, stem: str = "f") -> str:
        return self.const(np.asarray(value, dtype=np.float32), stem)

    def split(self, x: str, delimiter: str) -> tuple[str, str]:
        from onnx import helper

        y, z = self.name("pieces"), self.name("n_pieces")
        self.nodes.append(helper.make_node("StringSplit", [x], [y, z], delimiter=delimiter))
        return y, z

    def occurrences(self, text: str, needle: str) -> str:
        """float [B]: non-overlapping occurrences of `needle` in each text."""
        _, n = self.split(text, needle)
        return self.op(
            "Cast", [self.op("Max", [self.op("Sub", [n, self.i64(1)]), self.i64(0)])], to=1
        )

    def bits(self, x: str, patterns: list[str]) -> str:
        """float, shape of x: sum of 2**k over the patterns k that x full-matches."""
        total = ""
        for k, pattern in enumerate(patterns):
            hit = self.op("Cast", [self.op("RegexFullMatch", [x], pattern=pattern)], to=1)
            term = self.op("Mul", [hit, self.f32(float(1 << k))])
            total = self.op("Add", [total, term]) if total else term
        return total


def _whitespace_pieces(g: TextGraph, text: str) -> tuple[str, str, str, str]:
    """([B, M] pieces in text order, [B, M] bool: a real piece (not padding), and, float
    [B] each, the extra and the non-ASCII UTF-8 bytes of the whitespace the split drops)."""
    from onnx import TensorProto

    x = g.op("Unsqueeze", [text, g.i64(1)])
    valid = g.op("Unsqueeze", [g.op("Equal", [text, text]), g.i64(1)])  # all true, [B, 1]
    ws_extra, ws_non_ascii = g.f32(0.0), g.f32(0.0)
    empty = g.const(np.array([[[""]]], dtype=object), "empty")
    for d in WHITESPACE:
        y, n = g.split(x, d)
        width = g.op("Slice", [g.op("Shape", [y]), g.i64(2), g.i64(3)])
        pad = g.op("Max", [g.op("Sub", [g.i64(1), width]), g.i64(0)])
        pad_shape = g.op(
            "Concat", [g.op("Slice", [g.op("Shape", [y]), g.i64(0), g.i64(2)]), pad], axis=0
        )
        y = g.op("Concat", [y, g.op("Expand", [empty, pad_shape])], axis=2)
        count = g.op("Max", [n, g.i64(1)])  # an empty piece is still a piece
        k = g.op("Range", [g.i64(0), g.op("Max", [width, g.i64(1)]), g.i64(1)])
        k = g.op("Reshape", [k, g.i64(1, 1, -1)])
        child = g.op(
            "And",
            [
                g.op("Unsqueeze", [valid, g.i64(2)]),
                g.op("Less", [k, g.op("Unsqueeze", [count, g.i64(2)])]),
            ],
        )
        utf8 = len(d.encode("utf-8"))
        if utf8 > 1:
            seen = g.op("Where", [valid, g.op("Sub", [count, g.i64(1)]), g.i64(0)])
            n_d = g.op(
                "Cast", [g.op("ReduceSum", [seen, g.i64(1)], keepdims=0)], to=TensorProto.FLOAT
            )
            ws_extra = g.op("Add", [ws_extra, g.op("Mul", [n_d, g.f32(float(utf8 - 1))])])
            ws_non_ascii = g.op("Add", [ws_non_ascii, g.op("Mul", [n_d, g.f32(float(utf8))])])
        x = g.op("Reshape", [y, g.i64(0, -1)])
        valid = g.op("Reshape", [child, g.i64(0, -1)])
    return x, valid, ws_extra, ws_non_ascii


def _window_weights(
    g: TextGraph, length: str, valid: str, head: int, tail: int
) -> tuple[str, str, str]:
    """(float [B, M]: share of each piece inside window_text's head/tail window,
    float [B]: text length in code points, float [B, M]: each piece's start offset)."""
    unit = g.op("Where", [valid, g.op("Add", [length, g.f32(1.0)]), g.f32(0.0)])
    end_incl = g.op("CumSum", [unit, g.i64(1)])
    start = g.op("Sub", [end_incl, unit])
    end = g.op("Add", [start, length])
    total = g.op(
        "Max",
        [g.op("Sub", [g.op("ReduceSum", [unit, g.i64(1)], keepdims=0), g.f32(1.0)]), g.f32(0.0)],
    )
    n = g.op("Unsqueeze", [total, g.i64(1)])
    cut = g.op("Sub", [n, g.f32(float(tail))])  # the tail window starts here
    h = g.f32(float(head))
    safe_len = g.op("Max", [length, g.f32(1.0)])
    in_head = g.op(
        "Div", [g.op("Min", [g.op("Relu", [g.op("Sub", [h, start])]), length]), safe_len]
    )
    in_tail = g.op(
        "Div", [g.op("Min", [g.op("Relu", [g.op("Sub", [end, cut])]), length]), safe_len]
    )
    windowed = g.op("Min", [g.op("Add", [in_head, in_tail]), g.f32(1.0)])
    if tail == 0:
        windowed = in_head
    is_long = g.op("Greater", [n, g.f32(float(head + tail))])
    share = g.op("Where", [is_long, windowed, g.f32(1.0)])
    return g.op("Where", [valid, share, g.f32(0.0)]), total, start


def _cut_pieces(
    g: TextGraph,
    pieces: str,
    share: str,
    length: str,
    start: str,
    total: str,
    window: tuple[int, int],
    tokens: tuple[str, dict[str, int], int, int],
) -> str:
    """float [B, W]: what makes the pieces window_text cuts exact. The pooling counts a
    cut piece as its share of the whole piece's row; Python tokenizes the part kept
    (text[:head] ends in a prefix, text[-tail:] starts with a suffix). For pieces of
    ALPHABET characters the graph's WordPiece gives that part: add it, minus the share."""
    from onnx import TensorProto

    head, tail = window
    i64 = g.i64
    n = g.op("Unsqueeze", [total, i64(1)])
    is_long = g.op("Greater", [n, g.f32(float(head + tail))])
    end = g.op("Add", [start, length])
    cut = g.op("Sub", [n, g.f32(float(tail))])
    h = g.f32(float(head))
    head_cut = g.op("And", [g.op("Less", [start, h]), g.op("Greater", [end, h])])
    tail_cut = g.op("And", [g.op("Less", [start, cut]), g.op("Greater", [end, cut])])
    if tail == 0:
        tail_cut = g.op("And", [tail_cut, g.op("Not", [is_long])])
    batch = g.op("Slice", [g.op("Shape", [pieces]), i64(0), i64(1)])
    at = g.op(
        "Expand",
        [
            g.op("Unsqueeze", [g.op("Range", [i64(0), g.op("Squeeze", [batch]), i64(1)]), i64(1)]),
            g.op("Shape", [pieces]),
        ],
    )
    flat = {
        "x": g.op("Reshape", [pieces, i64(-1)]),
        "at": g.op("Reshape", [at, i64(-1)]),
        "len": g.op("Reshape", [length, i64(-1)]),
        "share": g.op("Reshape", [share, i64(-1)]),
    }
    parts: dict[str, list[str]] = {"x": [], "at": [], "len": [], "share": [], "off": [], "keep": []}
    for mask, off, keep in (
        (head_cut, None, g.op("Sub", [h, start])),
        (tail_cut, g.op("Sub", [cut, start]), g.op("Sub", [end, cut])),
    ):
        sel = g.op("Reshape", [g.op("And", [mask, is_long]), i64(-1)])
        for k in ("x", "at", "len", "share"):
            parts[k].append(g.op("Compress", [flat[k], sel], axis=0))
        keep_f = g.op("Compress", [g.op("Reshape", [keep, i64(-1)]), sel], axis=0)
        parts["keep"].append(keep_f)
        parts["off"].append(
            g.op("Mul", [keep_f, g.f32(0.0)])
            if off is None
            else g.op("Compress", [g.op("Reshape", [off, i64(-1)]), sel], axis=0)
        )
    sentinel = {
        "x": g.const(np.array([""], dtype=object), "empty"),
        "at": i64(0),
        "len": g.f32(np.zeros(1, np.float32)),
        "share": g.f32(np.zeros(1, np.float32)),
        "off": g.f32(np.zeros(1, np.float32)),
        "keep": g.f32(np.zeros(1, np.float32)),
    }
    col = {k: g.op("Concat", [*v, sentinel[k]], axis=0) for k, v in parts.items()}
    low = g.op("StringNormalizer", [col["x"]], case_change_action="LOWER", locale=LOCALE)
    codes, full_len, alive = char_codes(g, low)
    off = g.op("Cast", [col["off"]], to=TensorProto.INT64)
    keep = g.op("Cast", [col["keep"]], to=TensorProto.INT64)
    cols = g.const(np.arange(MAX_CHARS + 1, dtype=np.int64)[None, :], "all_cols")
    shifted = g.op(
        "GatherElements",
        [
            codes,
            g.op("Min", [g.op("Add", [cols, g.op("Unsqueeze", [off, i64(1)])]), i64(MAX_CHARS)]),
        ],
        axis=1,
    )
    rows = greedy_rows(
        g,
        g.op("Concat", [shifted, codes], axis=0),
        g.op("Concat", [keep, full_len], axis=0),
        g.op("Concat", [alive, alive], axis=0),
        tokens,
    )
    m = g.op("Shape", [keep])
    part = g.op("Slice", [rows, i64(0), m, i64(0)])
    whole = g.op("Slice", [rows, m, g.op("Mul", [m, i64(2)]), i64(0)])
    fix = g.op("Sub", [part, g.op("Mul", [whole, g.op("Unsqueeze", [col["share"], i64(1)])])])
    fix = g.op("Where", [g.op("Unsqueeze", [alive, i64(1)]), fix, g.f32(0.0)])
    width = g.op("Slice", [g.op("Shape", [rows]), i64(1), i64(2)])
    zeros = g.op(
        "ConstantOfShape", [g.op("Concat", [batch, width], axis=0)], value=_f32_tensor(0.0)
    )
    return g.op("ScatterND", [zeros, g.op("Unsqueeze", [col["at"], i64(1)]), fix], reduction="add")


def word_tables(
    router: Router, vocab: dict[str, tuple[int, ...]], punct: str
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(words, their token ids [2 + words, WORD_TOKENS], token rows, punctuation rows).

    Id row 0 is the empty word, row 1 an unknown one ([UNK]). The token rows are the
    bundle's [static vector | statistics] rows, then a zero row (padding), then one row
    per word of more than WORD_TOKENS tokens holding the sum of its last ones."""
    f = router.featurizer
    token_rows = f.embedder.token_rows
    unk = f.tokenizer.unk_id if f.tokenizer.unk_id >= 0 else 0
    zero = len(token_rows)
    words = sorted(vocab)
    ids = np.full((len(words) + 2, WORD_TOKENS), zero, dtype=np.int32)
    ids[1, 0] = unk
    overflow: list[np.ndarray] = []
    for i, w in enumerate(words, 2):
        t = vocab[w]
        if len(t) > WORD_TOKENS:
            overflow.append(token_rows.take(list(t[WORD_TOKENS - 1 :]), axis=0).sum(axis=0))
            t = (*t[: WORD_TOKENS - 1], zero + len(overflow))
        ids[i, : len(t)] = t
    rows = np.vstack([token_rows, np.zeros((1, token_rows.shape[1]), np.float32), *overflow])
    punct_rows = np.array(
        [token_rows.take(list(f.tokenizer.chunk_ids(c)), axis=0).sum(axis=0) for c in punct],
        dtype=np.float32,
    ).reshape(len(punct), token_rows.shape[1])
    return words, ids, rows.astype(np.float32), punct_rows


def build_text_graph(
    router: Router,
    vocab: dict[str, tuple[int, ...]],
    lowered_keys: dict[str, str],
    punct: str,
    alphabet: str = ALPHABET,
) -> Any:
    """The ONNX ModelProto of `router` on text. `vocab`: word (Python-lowercased, no
    character of `punct`) -> its WordPiece ids; `lowered_keys`: StringNormalizer's
    lowercase of a word -> the word it stands for; `punct`: the characters split off as
    tokens of their own, as the WordPiece pre-tokenizer does."""
    from onnx import TensorProto, helper

    if router.featurizer.tokenizer.max_word_chars != MAX_CHARS:
        raise ValueError(f"export-onnx needs a tokenizer with max_input_chars_per_word {MAX_CHARS}")
    if router.featurizer.config.kind != "fast":
        raise ValueError(
            "export-onnx needs a fast-featurizer bundle (the accurate one runs MiniLM)"
        )
    f, space, sets, policy = router.featurizer, router.space, router.sets, router.policy
    dims, width = f.dims, f.embedder.token_rows.shape[1]
    words, word_ids, token_rows, punct_rows = word_tables(router, vocab, punct)
    index = {w: i for i, w in enumerate(words, 2)}
    keys = sorted(lowered_keys)
    lookup = (keys, [index[lowered_keys[k]] for k in keys])

    g = TextGraph()
    g.alphabet = alphabet
    text = TEXT_INPUT
    pieces, valid, ws_extra, ws_non_ascii = _whitespace_pieces(g, text)
    length = g.bits(pieces, [length_bit_pattern(b) for b in range(LENGTH_BITS)])
    window = (f.config.head_chars, f.config.tail_chars)
    share, n_chars, start = _window_weights(g, length, valid, *window)

    tables = (word_ids, token_rows, punct_rows)
    sums = _pooled(g, pieces, share, punct, lookup, tables, f.tokenizer.vocab)
    unk, zero = int(word_ids[1, 0]), int(word_ids[0, 0])
    rows_c = next(i.name for i in g.inits if i.name.startswith("token_rows"))
    tokens = (rows_c, f.tokenizer.vocab, unk, zero)
    sums = g.op(
        "Add", [sums, _cut_pieces(g, pieces, share, length, start, n_chars, window, tokens)]
    )
    n_tok = g.op("Slice", [sums, g.i64(width - 1), g.i64(width), g.i64(1)])
    empty_row = g.f32(f.embedder.empty_row[None, :])
    sums = g.op("Where", [g.op("Greater", [n_tok, g.f32(0.0)]), sums, empty_row])
    emb = g.op("Slice", [sums, g.i64(0), g.i64(dims), g.i64(1)])

    parts = [_unit(g, emb, space.center)]
    if space.uses_hand:
        hand = _hand_features(g, text, pieces, valid, n_chars, (ws_extra, ws_non_ascii), sums, dims)
        idx = g.op("Gather", [hand, g.i64(*space.hand_indices)], axis=1)
        z = g.op(
            "Add",
            [
                g.op("Mul", [idx, g.f32(np.array(space.hand_scale))]),
                g.f32(np.array(space.hand_shift)),
            ],
        )
        lim = space.hand_limit
        parts.append(g.op("Clip", [z, g.f32(-lim), g.f32(lim)]))
    x = _unit(g, g.op("Concat", parts, axis=1) if len(parts) > 1 else parts[0], ())

    p = g.softmax_sets(x, sets)
    ok = g.op(
        "Cast",
        [
            g.op(
                "GreaterOrEqual",
                [
                    g.op("Slice", [p, g.i64(0), g.i64(sets.tiers - 1), g.i64(1)]),
                    g.f32(np.array(policy.thresholds, dtype=np.float32)),
                ],
            )
        ],
        to=TensorProto.INT32,
    )
    top = g.op(
        "Cast",
        [g.op("Slice", [g.op("Equal", [p, p]), g.i64(0), g.i64(1), g.i64(1)])],
        to=TensorProto.INT32,
    )
    tier = g.op("ArgMax", [g.op("Concat", [ok, top], axis=1)], axis=1, keepdims=0)

    _rename(g, p, P_PASS_OUTPUT)
    _rename(g, tier, TIER_OUTPUT)
    names = np.array(router.ladder.names, dtype=object)
    g.nodes.append(helper.make_node("Identity", [g.const(names, "names")], [NAMES_OUTPUT]))
    graph = helper.make_graph(
        g.nodes,
        "tier_router_text",
        [helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"])],
        [
            helper.make_tensor_value_info(P_PASS_OUTPUT, TensorProto.FLOAT, ["batch", sets.tiers]),
            helper.make_tensor_value_info(TIER_OUTPUT, TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info(NAMES_OUTPUT, TensorProto.STRING, [sets.tiers]),
        ],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        ir_version=IR_VERSION,
        producer_name="tier-router",
        doc_string=f"tier-router {router.version}: text -> p_pass per tier, chosen tier index",
    )
    meta = {
        "tier_names": json.dumps(router.ladder.names),
        "ladder_toml": router.ladder.to_toml(),
        "router_version": router.version,
        "thresholds": json.dumps(list(policy.thresholds)),
        "vocabulary_words": str(len(words)),
    }
    helper.set_model_props(model, meta)
    return model


def _pooled(
    g: TextGraph,
    pieces: str,
    share: str,
    punct: str,
    lookup: tuple[list[str], list[int]],
    tables: tuple[np.ndarray, np.ndarray, np.ndarray],
    wordpiece_vocab: dict[str, int],
) -> str:
    """float [B, W]: the share-weighted sum of the pieces' token rows. Pieces are split
    at each punctuation character (a token of its own, counted), the rest looked up as
    whole words (word_tables)."""
    from onnx import TensorProto

    batch = g.op("Slice", [g.op("Shape", [pieces]), g.i64(0), g.i64(1)])
    at = g.op(
        "Expand",
        [
            g.op(
                "Unsqueeze",
                [g.op("Range", [g.i64(0), g.op("Squeeze", [batch]), g.i64(1)]), g.i64(1)],
            ),
            g.op("Shape", [pieces]),
        ],
    )
    x = g.op("Reshape", [pieces, g.i64(-1)])
    w = g.op("Reshape", [share, g.i64(-1)])
    at = g.op("Reshape", [at, g.i64(-1)])
    sentinel_s = g.const(np.array([""], dtype=object), "sentinel")
    zero_i, zero_f = g.i64(0), g.f32(np.zeros(1, dtype=np.float32))

    def compact(x: str, w: str, at: str) -> tuple[str, str, str]:
        # Only non-empty pieces inside the window, plus one empty piece so that no
        # tensor is ever empty (a zero-length StringNormalizer input is an error).
        keep = g.op(
            "And", [g.op("Not", [g.op("Equal", [x, sentinel_s])]), g.op("Greater", [w, g.f32(0.0)])]
        )
        return (
            g.op("Concat", [g.op("Compress", [x, keep], axis=0), sentinel_s], axis=0),
            g.op("Concat", [g.op("Compress", [w, keep], axis=0), zero_f], axis=0),
            g.op("Concat", [g.op("Compress", [at, keep], axis=0), zero_i], axis=0),
        )

    x, w, at = compact(x, w, at)
    x = g.op("StringNormalizer", [x], case_change_action="LOWER", locale=LOCALE)
    zeros_b = g.op("ConstantOfShape", [batch], value=_f32_tensor(0.0))
    counts = []
    for c in punct:
        y, n = g.split(x, c)
        seen = g.op(
            "Cast", [g.op("Max", [g.op("Sub", [n, g.i64(1)]), zero_i])], to=TensorProto.FLOAT
        )
        idx = g.op("Unsqueeze", [at, g.i64(1)])
        counts.append(
            g.op(
                "Unsqueeze",
                [
                    g.op("ScatterND", [zeros_b, idx, g.op("Mul", [seen, w])], reduction="add"),
                    g.i64(1),
                ],
            )
        )
        k = g.op("Shape", [y])
        x = g.op("Reshape", [y, g.i64(-1)])
        w = g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [w, g.i64(1)]), k]), g.i64(-1)])
        at = g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [at, g.i64(1)]), k]), g.i64(-1)])
        x, w, at = compact(x, w, at)
    word_ids, token_rows, punct_rows = tables
    keys, rows = lookup
    word = g.op(
        "LabelEncoder",
        [x],
        domain="ai.onnx.ml",
        keys_strings=["", *keys],
        values_int64s=[0, *rows],
        default_int64=1,
    )
    rows_c = g.const(token_rows, "token_rows")
    # Words the vocabulary lacks go through the graph's WordPiece instead.
    miss = g.op("Equal", [word, g.i64(1)])
    x_m, w_m, at_m = (
        g.op("Concat", [g.op("Compress", [x, miss], axis=0), sentinel_s], axis=0),
        g.op("Concat", [g.op("Compress", [w, miss], axis=0), zero_f], axis=0),
        g.op("Concat", [g.op("Compress", [at, miss], axis=0), zero_i], axis=0),
    )
    word = g.op("Where", [miss, zero_i, word])
    ids = g.op("Gather", [g.const(word_ids, "word_ids"), word])  # [n, WORD_TOKENS]
    summed = g.op("ReduceSum", [g.op("Gather", [rows_c, ids]), g.i64(1)], keepdims=0)
    weighted = g.op("Mul", [summed, g.op("Unsqueeze", [w, g.i64(1)])])
    zeros_bw = g.op(
        "ConstantOfShape",
        [g.op("Concat", [batch, g.i64(token_rows.shape[1])], axis=0)],
        value=_f32_tensor(0.0),
    )
    words = g.op(
        "ScatterND", [zeros_bw, g.op("Unsqueeze", [at, g.i64(1)]), weighted], reduction="add"
    )
    unk_id, zero_id = int(word_ids[1, 0]), int(word_ids[0, 0])
    pieces_m = wordpiece_rows(g, x_m, rows_c, wordpiece_vocab, unk_id, zero_id)
    weighted_m = g.op("Mul", [pieces_m, g.op("Unsqueeze", [w_m, g.i64(1)])])
    words = g.op(
        "ScatterND", [words, g.op("Unsqueeze", [at_m, g.i64(1)]), weighted_m], reduction="add"
    )
    if not punct:
        return words
    punct_c = g.const(punct_rows, "punct_rows")
    return g.op("Add", [words, g.op("MatMul", [g.op("Concat", counts, axis=1), punct_c])])


def _f32_tensor(v: float) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor("value", TensorProto.FLOAT, [1], [v])


def _unit(g: TextGraph, v: str, center: tuple[float, ...]) -> str:
    """Rows of v scaled to unit norm (then centred and normalised again, as JointSpace)."""

    def norm(a: str) -> str:
        n = g.op("Sqrt", [g.op("ReduceSum", [g.op("Mul", [a, a]), g.i64(1)], keepdims=1)])
        return g.op("Div", [a, g.op("Max", [n, g.f32(EPS)])])

    out = norm(v)
    if center:
        out = norm(g.op("Sub", [out, g.f32(np.array(center, dtype=np.float32))]))
    return out


def _hand_features(
    g: TextGraph,
    text: str,
    pieces: str,
    valid: str,
    n_chars: str,
    ws_bytes: tuple[str, str],
    sums: str,
    dims: int,
) -> str:
    """float [B, len(FEATURE_NAMES)]: router.text_features.text_features, in graph ops."""

    def col(j: int) -> str:
        return g.op("Slice", [sums, g.i64(dims + j), g.i64(dims + j + 1), g.i64(1)])

    n_kw = len(KEYWORDS)
    n_tok, subwords = col(n_kw + 1), col(n_kw)
    # UTF-8 bytes: every code point is one, non-ASCII ones add 1-3.
    vmask = g.op("Cast", [valid], to=1)
    extra, non_ascii = ws_bytes
    for lo, hi, size in _NON_ASCII:
        n = g.bits(pieces, [count_bit_pattern(b, lo, hi) for b in range(COUNT_BITS)])
        n = g.op("ReduceSum", [g.op("Mul", [n, vmask]), g.i64(1)], keepdims=0)
        extra = g.op("Add", [extra, g.op("Mul", [n, g.f32(float(size - 1))])])
        non_ascii = g.op("Add", [non_ascii, g.op("Mul", [n, g.f32(float(size))])])
    n_bytes = g.op("Max", [g.op("Add", [n_chars, extra]), g.f32(1.0)])

    def col_of(v: str) -> str:
        return g.op("Unsqueeze", [v, g.i64(1)])

    shares = []
    for name, chars in _SYMBOLS.items():
        if name == "non_ascii":
            count = non_ascii
        else:
            count = _sum([g.occurrences(text, chr(c)) for c in chars], g)
        shares.append(col_of(g.op("Div", [count, n_bytes])))
    choices = _sum([g.occurrences(text, c.decode()) for c in _CHOICES], g)
    log_tok = g.op("Log", [g.op("Add", [n_tok, g.f32(1.0)])])
    cols = [
        col_of(g.op("Log", [g.op("Add", [n_chars, g.f32(1.0)])])),
        log_tok,
        g.op("Div", [subwords, g.op("Max", [n_tok, g.f32(1.0)])]),
        g.op(
            "Log",
            [
                g.op(
                    "Add",
                    [g.op("Slice", [sums, g.i64(dims), g.i64(dims + n_kw), g.i64(1)]), g.f32(1.0)],
                )
            ],
        ),
        *shares,
        col_of(g.op("Log", [g.op("Add", [choices, g.f32(1.0)])])),
    ]
    hand = g.op("Concat", cols, axis=1)
    assert len(FEATURE_NAMES) == 3 + n_kw + len(_SYMBOLS) + 1
    return hand


def _sum(terms: list[str], g: TextGraph) -> str:
    total = terms[0]
    for t in terms[1:]:
        total = g.op("Add", [total, t])
    return total


def _rename(g: TextGraph, output: str, new: str) -> None:
    producer = next(n for n in g.nodes if output in n.output)
    producer.output[list(producer.output).index(output)] = new
    for n in g.nodes:
        for i, name in enumerate(n.input):
            if name == output:
                n.input[i] = new


def harvest_chunks(texts: Iterable[str], limit: int) -> list[str]:
    """The `limit` commonest whitespace chunks (original case) of `texts`."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(t.split())
    return [c for c, _ in counts.most_common(limit)]


def write_text_graph(model: Any, out: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def ort_lowercase(texts: list[str]) -> list[str]:
    """What the graph's StringNormalizer makes of each text (it differs from str.lower
    for a few letters), so the vocabulary can be keyed by it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if not texts:
        return []
    node = helper.make_node(
        "StringNormalizer", ["x"], ["y"], case_change_action="LOWER", locale=LOCALE
    )
    graph = helper.make_graph(
        [node],
        "lower",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [None])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.array(texts, dtype=object)})[0]
    return [str(s) for s in out]


def split_punct(chunk: str, punct: str) -> list[str]:
    """The words of a chunk once every character of `punct` is cut out, as the graph
    cuts them (one StringSplit per character, empty pieces dropped)."""
    pieces = [chunk]
    for c in punct:
        pieces = [q for p in pieces for q in p.split(c) if q]
    return pieces


def punctuation(router: Router, chunks: list[str], extra: int = MAX_EXTRA_PUNCT) -> str:
    """ASCII punctuation, then the commonest other single-token punctuation characters
    of `chunks`: what the graph splits words at."""
    from collections import Counter

    from router.wordpiece import _is_punct

    vocab = router.featurizer.tokenizer.vocab
    seen: Counter[str] = Counter(
        c for chunk in chunks for c in chunk if not c.isascii() and c in vocab and _is_punct(c)
    )
    return string.punctuation + "".join(c for c, _ in seen.most_common(extra))


def vocabulary(
    router: Router, chunks: list[str], punct: str
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(word -> WordPiece ids, graph key -> word) for the words of `chunks` (any case)
    and every whole word of the bundle's WordPiece vocabulary. A lookup is exact for any
    word; the graph's own WordPiece (text_graph_wordpiece) covers ASCII words besides."""
    f = router.featurizer
    words = [w for w in f.tokenizer.vocab if not w.startswith("##") and not w.startswith("[")]
    pieces = [q for c in chunks for q in split_punct(c, punct)]
    originals = list(dict.fromkeys([*pieces, *(q for w in words for q in split_punct(w, punct))]))
    originals = [c for c in originals if graph_text(c) == c]
    vocab: dict[str, tuple[int, ...]] = {}
    keys: dict[str, str] = {}
    for word, key in zip(originals, ort_lowercase(originals), strict=True):
        low = word.lower()
        if low not in vocab:
            vocab[low] = f.tokenizer.chunk_ids(low)
        keys.setdefault(key, low)
    return vocab, keys


def export_text_graph(
    bundle: Path, out: Path, vocab_texts: Iterable[str], max_chunks: int
) -> dict[str, Any]:
    """Write the text-in graph of `bundle` to `out`; what it holds, for the CLI's report."""
    router = Router.load(bundle)
    chunks = harvest_chunks(vocab_texts, max_chunks)
    punct = punctuation(router, chunks)
    vocab, keys = vocabulary(router, chunks, punct)
    alphabet = ALPHABET + extra_letters(
        chunks, router.featurizer.tokenizer.vocab, MAX_EXTRA_LETTERS
    )
    model = build_text_graph(router, vocab, keys, punct, alphabet)
    write_text_graph(model, out)
    return {
        "out": str(out),
        "tiers": router.ladder.names,
        "vocabulary_words": len(vocab),
        "punctuation": len(punct),
        "alphabet": len(alphabet),
        "bytes": out.stat().st_size,
    }


def graph_text(text: str) -> str:
    """`text` as valid UTF-8, which ONNX Runtime's string tensors need: lone surrogates
    (Python strings may hold them, UTF-8 cannot) become U+FFFD, which the router's
    tokenizer drops as it drops surrogates."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def open_text_graph(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_text_graph(
    session: Any, texts: list[str], batch: int = RUN_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """(P(pass) [n, tiers] float32, tier index [n] int64) of prompts, `batch` per run (a
    run pads every prompt to the most pieces one has)."""
    ps, tiers = [], []
    for i in range(0, max(1, len(texts)), batch):
        feed = np.array([graph_text(t) for t in texts[i : i + batch]], dtype=object)
        p, tier = session.run([P_PASS_OUTPUT, TIER_OUTPUT], {TEXT_INPUT: feed})
        ps.append(p)
        tiers.append(tier)
    return np.vstack(ps), np.concatenate(tiers)
