"""A small, cached BERT WordPiece tokenizer for the static-embedding path.

The Rust `tokenizers` library spends hundreds of microseconds per call on this machine
(thread pool and offsets bookkeeping routing never uses), and Python's unicode regex
engine is little better. Routing needs only token ids, and whitespace-separated chunks
repeat, so each chunk is tokenized once and then costs one dict lookup. Training and
routing both call this class, so ids can never differ between the two.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from itertools import chain
from pathlib import Path

_CACHE_LIMIT = 500_000


def _is_punct(c: str) -> bool:
    o = ord(c)
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_cjk(o: int) -> bool:
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0x20000 <= o <= 0x2A6DF
        or 0x2A700 <= o <= 0x2CEAF
        or 0xF900 <= o <= 0xFAFF
        or 0x2F800 <= o <= 0x2FA1F
    )


def _clean(chunk: str) -> str:
    """BERT normalisation of one lowercased chunk: drop controls, split CJK, strip accents."""
    out = []
    for c in chunk:
        o = ord(c)
        if o == 0 or o == 0xFFFD or (unicodedata.category(c) in ("Cc", "Cf") and not c.isspace()):
            continue
        if 0xD800 <= o <= 0xDFFF:  # lone surrogate: not text
            continue
        out.append(f" {c} " if _is_cjk(o) else c)
    text = unicodedata.normalize("NFD", "".join(out))
    return "".join(c for c in text if unicodedata.category(c) != "Mn")


class WordPieceTokenizer:
    def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]", max_word_chars: int = 100):
        self.vocab = vocab
        self.unk_id = vocab.get(unk_token, -1)
        self.max_word_chars = max_word_chars
        self._cache = _ChunkCache(self._tokenize_chunk)

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> WordPieceTokenizer:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        model = doc.get("model", {})
        if model.get("type") != "WordPiece":
            raise ValueError(f"{path}: expected a WordPiece tokenizer, got {model.get('type')!r}")
        return cls(
            {str(k): int(v) for k, v in model["vocab"].items()},
            unk_token=model.get("unk_token", "[UNK]"),
            max_word_chars=int(model.get("max_input_chars_per_word", 100)),
        )

    def _word_ids(self, word: str) -> list[int]:
        if len(word) > self.max_word_chars:
            return [self.unk_id] if self.unk_id >= 0 else []
        ids: list[int] = []
        start = 0
        vocab = self.vocab
        while start < len(word):
            end = len(word)
            found = -1
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = vocab.get(piece, -1)
                if found >= 0:
                    break
                end -= 1
            if found < 0:
                return [self.unk_id] if self.unk_id >= 0 else []
            ids.append(found)
            start = end
        return ids

    def _tokenize_chunk(self, chunk: str) -> tuple[int, ...]:
        if not chunk.isascii() or not chunk.isprintable():
            chunk = _clean(chunk)
        ids: list[int] = []
        for part in chunk.split():
            word: list[str] = []
            for c in part:
                if _is_punct(c):
                    if word:
                        ids.extend(self._word_ids("".join(word)))
                        word = []
                    ids.extend(self._word_ids(c))
                else:
                    word.append(c)
            if word:
                ids.extend(self._word_ids("".join(word)))
        return tuple(ids)

    def chunk_ids(self, chunk: str) -> tuple[int, ...]:
        """Ids of one lowercased, whitespace-free chunk (cached)."""
        return self._cache[chunk]

    def encode(self, text: str) -> list[int]:
        return list(chain.from_iterable(map(self._cache.__getitem__, text.lower().split())))


class _ChunkCache(dict[str, tuple[int, ...]]):
    """chunk -> ids; the lookup loop stays in C and misses compute (bounded memory)."""

    def __init__(self, compute: Callable[[str], tuple[int, ...]]):
        super().__init__()
        self._compute = compute

    def __missing__(self, chunk: str) -> tuple[int, ...]:
        ids = self._compute(chunk)
        if len(self) < _CACHE_LIMIT:
            self[chunk] = ids
        return ids
