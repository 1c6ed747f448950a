"""Static-embedding pooling with a per-chunk cache: the fast featurizer's hot path.

A prompt's static embedding is the sum of its WordPiece tokens' table rows. Tokens are
grouped by whitespace chunk, and chunks repeat across prompts, so each chunk's summed
row is computed once and kept in a preallocated matrix; a prompt then costs one split,
one dict lookup per chunk and one gather-and-sum in numpy, instead of a Python loop
over tokens. Each row also carries the token statistics the hand features need
(keyword counts, subword pieces, token count), summed in the same operation.

Memory is bounded: after `capacity` distinct chunks the cache stops growing and a
prompt with an unseen chunk takes the uncached path (same numbers, slower).
"""

from __future__ import annotations

import threading

import numpy as np

from router.text_features import N_TOKEN_STATS, token_stat_columns
from router.wordpiece import WordPieceTokenizer

DEFAULT_CAPACITY = 1 << 15  # 32k chunks x (dims + stats) float32: ~18 MB at 128 dims


class _CacheFull(Exception):
    pass


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
        self, tokenizer: WordPieceTokenizer, table: np.ndarray, capacity: int = DEFAULT_CAPACITY
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
        chunks = text.lower().split()
        if not chunks:
            return self._empty.copy()
        try:
            rows = list(map(self._rows.__getitem__, chunks))
            out = self._sum(self._chunks.take(rows, axis=0))
        except _CacheFull:
            out = self._sum(np.stack([self._uncached(c) for c in chunks]))
        return out if out[-1] > 0 else self._empty.copy()

    def _sum(self, rows: np.ndarray) -> np.ndarray:
        # A BLAS vector-matrix product sums the rows about twice as fast as .sum(axis=0).
        if len(rows) <= len(self._ones):
            out: np.ndarray = self._ones[: len(rows)] @ rows
            return out
        return rows.sum(axis=0)

    def _uncached(self, chunk: str) -> np.ndarray:
        row = dict.get(self._rows, chunk)
        return self._chunks[row] if row is not None else self._chunk_vector(chunk)
