"""A prompt's routing features as an outcome log carries them instead of its text.

What the router computed for the decision (the fast featurizer's summed static embedding
and its hand features), so retraining can fit on them without the prompt: the training
table holds exactly these two vectors per prompt. The log form is compact and exact:

    {"featurizer": "<sha256 hex of the featurizer's assets>",
     "encoding": "f32le-b64",
     "emb": "<base64 of the embedding as little-endian float32>",
     "hand": "<base64 of the hand features as little-endian float32>"}

Decoding gives back the same float32 bits. `featurizer` is `Featurizer.digest` (the same
digest a training table's rows carry), so a reader refuses features another featurizer made.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ENCODING = "f32le-b64"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_F32LE = np.dtype("<f4")


@dataclass(frozen=True, eq=False)
class PromptFeatures:
    """One prompt's fast features and the digest of the featurizer that made them."""

    digest: str
    emb: np.ndarray  # (dims,) float32: the summed static embedding, unnormalised
    hand: np.ndarray  # (hand features,) float32

    @classmethod
    def of(cls, digest: str, emb: np.ndarray, hand: Any) -> PromptFeatures:
        """Copies as float32 (the router's hand features are Python floats)."""
        return cls(digest, np.array(emb, dtype=np.float32), np.array(hand, dtype=np.float32))

    def to_log(self) -> dict[str, str]:
        return {
            "featurizer": self.digest,
            "encoding": ENCODING,
            "emb": _b64(self.emb),
            "hand": _b64(self.hand),
        }

    @classmethod
    def from_log(cls, d: Any) -> PromptFeatures:
        """Parse and check a log's `features` object; ValueError saying what is wrong."""
        if not isinstance(d, Mapping):
            raise ValueError(f"features: expected an object, got {type(d).__name__}")
        digest = d.get("featurizer")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise ValueError(
                f"features.featurizer: expected a sha256 hex digest, got {str(digest)[:80]!r}"
            )
        if d.get("encoding") != ENCODING:
            raise ValueError(
                f"features.encoding: {d.get('encoding')!r} is not {ENCODING!r} (this reader "
                "knows only that one)"
            )
        emb = _unb64(d.get("emb"), "emb")
        if emb.size == 0:
            raise ValueError("features.emb: empty")
        return cls(digest, emb, _unb64(d.get("hand"), "hand"))


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=_F32LE).tobytes()).decode("ascii")


def _unb64(s: Any, name: str) -> np.ndarray:
    if not isinstance(s, str):
        raise ValueError(f"features.{name}: expected a base64 string, got {type(s).__name__}")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"features.{name}: not valid base64") from None
    if len(raw) % 4:
        raise ValueError(
            f"features.{name}: {len(raw)} bytes is not a whole number of float32 values"
        )
    out = np.frombuffer(raw, dtype=_F32LE).astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"features.{name}: holds a NaN or infinite value")
    return out
