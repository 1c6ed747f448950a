"""Static-embedding pooling with a per-chunk cache: the fast featurizer's hot path.

A prompt's static embedding is the sum of its WordPiece tokens' table rows. Tokens are
grouped by whitespace chunk, and chunks repeat across prompts, so each chunk's summed
row is computed once and kept in a preallocated matrix; a prompt then costs one split,
one dict lookup per chunk and one gather-and-sum in numpy, instead of a Python loop
over tokens. Each row also carries the token statistics the hand features need
(keyword counts, subword pieces, token count), summed in the same operation.

Long prompts often share long stretches (few-shot examples, system templates), so a
second cache keeps the summed row of 512-character blocks, cut at whitespace, that
have been seen at least twice: a shared few-shot prefix then costs one lookup.

Memory is bounded: after `capacity` distinct chunks (or BLOCK_CAPACITY blocks) a
cache stops growing, and what it would have held takes the uncached path (same
numbers, slower).

With the compiled kernels (router.compiled), a ChunkIndex does the split, the lookup
and the sum in one call, hashing each chunk in place; the block cache is then not
needed. New chunks still get their rows from the Python code below.
"""

from __future__ import annotations

import threading
from types import ModuleType

import numpy as np

from router.compiled import HOTPATH
from router.text_features import N_TOKEN_STATS, token_stat_columns
from router.wordpiece import WordPieceTokenizer

DEFAULT_CAPACITY = 1 << 15  # 32k chunks x (dims + stats) float32: ~18 MB at 128 dims
INDEX_FACTOR = 2  # compiled index entries per cached row (64 bytes a slot, 2-4 slots each)
BLOCK_CHARS = 512
BLOCK_CAPACITY = 4096  # ~2 MB
_SEEN_LIMIT = 1 << 16


class _CacheFull(Exception):
    """A new chunk arrived after the cache stopped growing."""


class _ChunkRows(dict[str, int]):
    """chunk -> row index; a miss computes and stores the row, or raises when full."""

    def __init__(self, owner: StaticEmbedder):
        super().__init__()
        self._owner = owner

    def __missing__(self, chunk: str) -> int:
        return self._owner._add_chunk(chunk)


class StaticEmbedder:
    """Text -> (summed static vector, summed token statistics) for one prompt.

    Thread-safe: a row is written before its chunk becomes visible in the dict, and
    additions are serialised by a lock; lookups take no lock.
    """

    def __init__(
        self,
        tokenizer: WordPieceTokenizer,
        table: np.ndarray,
        capacity: int = DEFAULT_CAPACITY,
        *,
        kernels: ModuleType | None = HOTPATH,
    ):
        vocab_rows = max(tokenizer.vocab.values()) + 1
        if table.ndim != 2 or table.shape[0] < vocab_rows:
            raise ValueError(
                f"static table has shape {table.shape}, the tokenizer needs {vocab_rows} rows"
            )
        if capacity < 1:
            raise ValueError(f"chunk cache capacity must be >= 1, got {capacity}")
        self.tokenizer = tokenizer
        self.dims = table.shape[1]
        # Token rows: [static vector | keyword groups | subword | 1].
        self._tokens = np.hstack(
            [table[:vocab_rows].astype(np.float32), token_stat_columns(tokenizer.vocab)]
        )
        self._chunks = np.zeros((capacity, self._tokens.shape[1]), dtype=np.float32)
        self._rows = _ChunkRows(self)
        self._used = 0
        self._lock = threading.Lock()
        unk = tokenizer.unk_id if tokenizer.unk_id >= 0 else 0
        self._empty = self._tokens[unk].copy()  # an empty prompt reads as one [UNK]
        self._ones = np.ones(4096, dtype=np.float32)
        self._blocks: dict[str, np.ndarray] = {}  # block text -> its summed row
        self._seen: set[int] = set()  # hashes of blocks seen once (admission on the second)
        # The compiled index also remembers the token ids of chunks that came after the
        # row cache filled up (the tokenizer's own cache holds those tuples anyway).
        self._index = kernels.ChunkIndex(INDEX_FACTOR * capacity) if kernels else None

    @property
    def index(self) -> object | None:
        """The compiled ChunkIndex, None without the compiled kernels."""
        return self._index

    @property
    def chunk_rows(self) -> np.ndarray:
        """The (capacity, width) matrix of cached chunk rows (rows are only appended)."""
        return self._chunks

    @property
    def empty_row(self) -> np.ndarray:
        """What a prompt without any token sums to (one [UNK])."""
        return self._empty

    @property
    def token_rows(self) -> np.ndarray:
        """(vocab, width): each token's [static vector | statistics]; a chunk's row is
        the sum of its tokens' rows."""
        return self._tokens

    def row_or_ids(self, chunk: str) -> int | tuple[int, ...]:
        """Row of `chunk` in chunk_rows, computed on first sight; once the cache is full,
        the chunk's token ids instead (its row is then summed from token_rows)."""
        try:
            return self._rows[chunk]
        except _CacheFull:
            return self.tokenizer.chunk_ids(chunk)

    @property
    def width(self) -> int:
        """Length of `sums()` vectors: dims + N_TOKEN_STATS."""
        return self.dims + N_TOKEN_STATS

    def _chunk_vector(self, chunk: str) -> np.ndarray:
        ids = self.tokenizer.chunk_ids(chunk)
        if not ids:
            return np.zeros(self._tokens.shape[1], dtype=np.float32)
        return self._tokens.take(ids, axis=0).sum(axis=0)

    def _add_chunk(self, chunk: str) -> int:
        with self._lock:
            row = dict.get(self._rows, chunk)
            if row is not None:
                return row
            if self._used >= len(self._chunks):
                raise _CacheFull
            row = self._used
            self._chunks[row] = self._chunk_vector(chunk)
            self._used += 1
            self._rows[chunk] = row
            return row

    def sums(self, text: str) -> np.ndarray:
        """Summed token rows of the (already windowed) text, lowercased."""
        low = text.lower()
        if self._index is not None:
            out = np.empty(self._chunks.shape[1], dtype=np.float32)
            n = self._index.pool(low, self._chunks, self._tokens, out, self.row_or_ids)
            return out if n and out[-1] > 0 else self._empty.copy()
        hits, chunks = self._split_blocks(low) if len(low) > 2 * BLOCK_CHARS else ([], low.split())
        if chunks:
            out = self._chunk_sums(chunks)
            if hits:
                out += np.add.reduce(hits)
        elif hits:
            out = np.add.reduce(hits)
        else:
            return self._empty.copy()
        return out if out[-1] > 0 else self._empty.copy()

    def _chunk_sums(self, chunks: list[str]) -> np.ndarray:
        try:
            rows = list(map(self._rows.__getitem__, chunks))
            return self._sum(self._chunks.take(rows, axis=0))
        except _CacheFull:
            return self._sum(np.stack([self._uncached(c) for c in chunks]))

    def _split_blocks(self, low: str) -> tuple[list[np.ndarray], list[str]]:
        """Cached rows of the text's whitespace-cut blocks, and the chunks of the rest.

        Cutting exactly at a whitespace character keeps every chunk whole, so the sum
        over blocks equals the sum over the text's chunks.
        """
        hits: list[np.ndarray] = []
        chunks: list[str] = []
        start, n = 0, len(low)
        while n - start > BLOCK_CHARS:
            end = start + BLOCK_CHARS
            cut = max(low.rfind(" ", start + 1, end), low.rfind("\n", start + 1, end))
            if cut < 0:
                break
            block = low[start:cut]
            row = self._blocks.get(block)
            if row is not None:
                hits.append(row)
            else:
                words = block.split()
                if words and len(self._blocks) < BLOCK_CAPACITY and self._second_sighting(block):
                    row = self._chunk_sums(words)
                    self._blocks[block] = row
                    hits.append(row)
                else:
                    chunks.extend(words)
            start = cut
        chunks.extend(low[start:].split())
        return hits, chunks

    def _second_sighting(self, block: str) -> bool:
        h = hash(block)
        if h in self._seen:
            return True
        if len(self._seen) >= _SEEN_LIMIT:
            self._seen.clear()
        self._seen.add(h)
        return False

    def _sum(self, rows: np.ndarray) -> np.ndarray:
        # A BLAS vector-matrix product sums the rows about twice as fast as .sum(axis=0).
        if len(rows) <= len(self._ones):
            out: np.ndarray = self._ones[: len(rows)] @ rows
            return out
        return rows.sum(axis=0)

    def _uncached(self, chunk: str) -> np.ndarray:
        row = dict.get(self._rows, chunk)
        return self._chunks[row] if row is not None else self._chunk_vector(chunk)
