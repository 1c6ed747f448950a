"""The compiled kernels (router/_hotpath.c) give the numbers of the Python code they replace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from compiled_kernels import require_compiled
from hypothesis import given, settings
from hypothesis import strategies as st

from router import text_features as text_features_module
from router.static_embedder import StaticEmbedder
from router.text_features import text_features
from router.wordpiece import WordPieceTokenizer

REPO = Path(__file__).resolve().parents[2]

WORDS = ["[PAD]", "[UNK]", "why", "compare", "def", "return", "##s", "the", "a", "?", "(", ")"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
TOK = WordPieceTokenizer(VOCAB)
TABLE = np.random.default_rng(0).normal(size=(len(VOCAB), 6)).astype(np.float32)
# Everything str.split() treats as whitespace, and characters of each storage width.
PIECES = [
    "why", "The", "thes", "a", "?", "(a)", "déf", "日本", "\U0001f600", "\ud800", "\x00",
    " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85",
    "\xa0", "\u1680", "\u2000", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
]  # fmt: skip
texts = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)


@pytest.fixture(scope="module")
def hot() -> ModuleType:
    return require_compiled()


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(texts, min_size=1, max_size=8))
def test_pool_equals_the_python_sum_whatever_the_whitespace_and_width(batch: list[str]) -> None:
    hot = require_compiled()
    compiled = StaticEmbedder(TOK, TABLE, kernels=hot)
    python = StaticEmbedder(TOK, TABLE, kernels=None)
    for text in batch * 2:  # the second time every chunk is found in the index
        np.testing.assert_allclose(compiled.sums(text), python.sums(text), rtol=1e-5, atol=1e-5)


def test_a_chunk_is_found_whatever_the_width_of_the_text_around_it(hot: ModuleType) -> None:
    emb = StaticEmbedder(TOK, TABLE, kernels=hot)
    ascii_first = emb.sums("why the")
    # The same chunks inside 2- and 4-byte-wide strings hit the entries made above.
    for wide in ("why the 日本", "why the \U0001f600"):
        got = emb.sums(wide)
        np.testing.assert_allclose(got, StaticEmbedder(TOK, TABLE, kernels=None).sums(wide))
    assert len(emb.index) == 4  # why, the, 日本, and the emoji
    np.testing.assert_array_equal(emb.sums("why the"), ascii_first)


@settings(max_examples=300, deadline=None)
@given(text=texts, n=st.integers(0, 50))
def test_scan_counts_equal_the_python_counts(text: str, n: int) -> None:
    hot = require_compiled()
    text = text + "\nA) x\nB) y (A) (B)" * (n % 3) + "{}();=<>$^+*/%#_[]?" * (n % 4)
    stats = [float(n)] * 9
    assert text_features(text, stats, kernels=hot) == text_features(text, stats, kernels=None)


def test_pool_validates_its_arguments(hot: ModuleType) -> None:
    index = hot.ChunkIndex(8)
    rows = np.ones((4, 3), dtype=np.float32)
    tokens = np.array([[10, 20, 30], [1, 2, 3]], dtype=np.float32)
    out = np.empty(3, dtype=np.float32)
    with pytest.raises(TypeError, match="float32"):
        index.pool("a", rows.astype(np.float64), tokens, out, lambda c: 0)
    with pytest.raises(ValueError, match="3 floats"):
        index.pool("a", rows, tokens, np.empty(5, dtype=np.float32), lambda c: 0)
    with pytest.raises(ValueError, match="3 floats"):
        index.pool("a", rows, tokens[:, :2].copy(), out, lambda c: 0)
    with pytest.raises(IndexError, match="outside"):
        index.pool("a", rows, tokens, out, lambda c: 9)
    with pytest.raises(KeyError):  # an error in lookup reaches the caller
        index.pool("b", rows, tokens, out, {}.__getitem__)
    with pytest.raises(IndexError, match="token id 5"):
        index.pool("c", rows, tokens, out, lambda c: (1, 5))
    with pytest.raises(TypeError):
        index.pool("d", rows, tokens, out, lambda c: "not a row")
    with pytest.raises(ValueError):
        hot.ChunkIndex(0)
    assert index.pool("a b  a", rows, tokens, out, lambda c: {"a": 0, "b": 1}[c]) == 3
    np.testing.assert_array_equal(out, [3, 3, 3])
    # Token ids instead of a row: their rows are summed, and the ids remembered.
    asked: list[str] = []
    assert index.pool("e e a", rows, tokens, out, lambda c: asked.append(c) or (0, 1, 1)) == 3
    np.testing.assert_array_equal(out, [25, 49, 73])
    assert index.pool("e", rows, tokens, out, lambda c: 0) == 1
    np.testing.assert_array_equal(out, [12, 24, 36])
    assert asked == ["e"]
    assert index.pool("f", rows, tokens, out, lambda c: ()) == 1  # no token: zeros
    np.testing.assert_array_equal(out, [0, 0, 0])


def test_the_index_stops_growing_at_its_limit_and_stays_correct(hot: ModuleType) -> None:
    index = hot.ChunkIndex(3)
    rows = np.arange(40, dtype=np.float32).reshape(20, 2)
    out = np.empty(2, dtype=np.float32)
    calls: list[str] = []

    def lookup(chunk: str) -> int:
        calls.append(chunk)
        return int(chunk)

    words = [str(i) for i in range(20)]
    for _ in range(2):
        assert index.pool(" ".join(words), rows, rows, out, lookup) == 20
        np.testing.assert_array_equal(out, rows.sum(axis=0))
    assert len(index) == 3
    assert len(calls) == 20 + 17  # chunks beyond the limit are asked for every time


def test_scan_bytes_validates_its_arguments(hot: ModuleType) -> None:
    bits, patterns = text_features_module._GROUP_BITS, text_features_module._CHOICES
    with pytest.raises(ValueError, match="256"):
        hot.scan_bytes(b"abc", bits[:10], patterns)
    with pytest.raises(TypeError, match="tuple of bytes"):
        hot.scan_bytes(b"abc", bits, ("x",))
    assert hot.scan_bytes(b"aXaXa", bytes(256), (b"aX", b"a"))[-1] == 2 + 3


def test_pure_python_switch_turns_the_kernels_off() -> None:
    code = (
        "from router.compiled import HOTPATH; from router.static_embedder import StaticEmbedder;"
        "print(HOTPATH)"
    )
    env = {**os.environ, "TIER_ROUTER_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def _fnv1a(text: str) -> int:
    h = 1469598103934665603
    for c in text:
        h = ((h ^ ord(c)) * 1099511628211) % (1 << 64)
    return h


def test_chunks_built_to_collide_are_still_found_through_python(hot: ModuleType) -> None:
    # 80 chunks on one home slot of the 1024-slot table: probes stop after 32 slots and
    # ask Python's dict, so results stay right and lookups stay bounded.
    colliding = [w for w in (f"w{i}" for i in range(400_000)) if _fnv1a(w) % 1024 == 7][:80]
    assert len(colliding) == 80
    index = hot.ChunkIndex(100)
    row_of = {w: i for i, w in enumerate(colliding)}
    rows = np.arange(len(colliding) * 2, dtype=np.float32).reshape(-1, 2)
    out = np.empty(2, dtype=np.float32)
    calls: list[str] = []

    def lookup(chunk: str) -> int:
        calls.append(chunk)
        return row_of[chunk]

    for _ in range(2):
        assert index.pool(" ".join(colliding), rows, rows, out, lookup) == 80
        np.testing.assert_array_equal(out, rows.sum(axis=0))
    assert len(index) <= 32
    assert len(calls) == 80 + (80 - len(index))
