"""Text -> model inputs, the one featurization used by training and routing.

`fast`: the sum of static token vectors (a table distilled from all-MiniLM-L6-v2;
router.joint_space normalises it) plus hand features. `accurate`: the same, plus the MiniLM
transformer itself, run through ONNX Runtime on a bounded token window.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.bundle import ENCODER_TOKENIZER, FEATURIZER_FILE, STATIC_TABLE, STATIC_TOKENIZER
from router.static_embedder import StaticEmbedder
from router.text_features import FEATURE_NAMES, text_features
from router.wordpiece import WordPieceTokenizer


@dataclass(frozen=True)
class FeaturizerConfig:
    kind: str  # "fast" | "accurate"
    head_chars: int = 1536
    tail_chars: int = 512
    hand_features: tuple[str, ...] = FEATURE_NAMES
    encoder_head_tokens: int = 6
    encoder_tail_tokens: int = 4

    def __post_init__(self) -> None:
        if self.kind not in ("fast", "accurate"):
            raise ValueError(f"featurizer kind must be 'fast' or 'accurate', got {self.kind!r}")
        if self.head_chars < 1 or self.tail_chars < 0:
            raise ValueError("head_chars must be >= 1 and tail_chars >= 0")
        if self.encoder_head_tokens < 1 or self.encoder_tail_tokens < 0:
            raise ValueError("encoder_head_tokens must be >= 1 and encoder_tail_tokens >= 0")

    def to_json(self) -> str:
        d = asdict(self)
        d["hand_features"] = list(self.hand_features)
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeaturizerConfig:
        d: dict[str, Any] = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("featurizer.json must be a JSON object")
        d["hand_features"] = tuple(d.get("hand_features", FEATURE_NAMES))
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"featurizer.json: unknown field(s) {sorted(unknown)}")
        return cls(**d)


def window_text(text: str, head: int, tail: int) -> str:
    """Bound the text the tokenizer sees: few-shot prompts put the question last."""
    if len(text) <= head + tail:
        return text
    return text[:head] + " " + text[-tail:] if tail else text[:head]


class Featurizer:
    """Produces the ONNX model's feeds: embedding and hand features (+ dense)."""

    def __init__(
        self,
        config: FeaturizerConfig,
        static_tokenizer: Path,
        static_table: np.ndarray,
        encoder_tokenizer: Path | None,
    ):
        if config.hand_features != FEATURE_NAMES:
            raise ValueError(
                "bundle was built with a different hand-feature set than this runtime "
                f"({len(config.hand_features)} vs {len(FEATURE_NAMES)} features); "
                "re-train the bundle or install the tier-router version it was built with"
            )
        self.config = config
        # Names the features this featurizer makes: logged prompt features and training
        # table rows carry it, so a reader refuses features another featurizer made.
        self.digest = assets_digest(config, static_tokenizer, static_table)
        self.tokenizer = WordPieceTokenizer.from_tokenizer_json(static_tokenizer)
        self.embedder = StaticEmbedder(self.tokenizer, static_table)
        self.dims = self.embedder.dims
        if config.kind == "accurate":
            if encoder_tokenizer is None:
                raise ValueError("the accurate featurizer needs the encoder's tokenizer")
            self.encoder_tokenizer = WordPieceTokenizer.from_tokenizer_json(encoder_tokenizer)
            v = self.encoder_tokenizer.vocab
            self.cls_id, self.sep_id = v["[CLS]"], v["[SEP]"]

    @classmethod
    def from_bundle(cls, config: FeaturizerConfig, bundle_dir: Path) -> Featurizer:
        enc = bundle_dir / ENCODER_TOKENIZER if config.kind == "accurate" else None
        table = np.load(bundle_dir / STATIC_TABLE, allow_pickle=False)
        if table.dtype != np.float32:
            raise ValueError(f"{STATIC_TABLE} must be float32, got {table.dtype}")
        return cls(config, bundle_dir / STATIC_TOKENIZER, table, enc)

    def embedding(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(static embedding, unnormalised; token statistics for `hand`) of one prompt."""
        c = self.config
        sums = self.embedder.sums(window_text(text, c.head_chars, c.tail_chars))
        return sums[: self.dims], sums[self.dims :]

    def hand(self, text: str, token_stats: np.ndarray) -> list[float]:
        return text_features(text, token_stats.tolist())

    def static(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(static embedding, unnormalised; hand features) of one prompt."""
        emb, stats = self.embedding(text)
        return emb, np.array(self.hand(text, stats), dtype=np.float32)

    def static_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        emb = np.zeros((len(texts), self.dims), dtype=np.float32)
        hand = np.zeros((len(texts), len(FEATURE_NAMES)), dtype=np.float32)
        for i, t in enumerate(texts):
            emb[i], hand[i] = self.static(t)
        return emb, hand

    def encoder_ids(self, text: str) -> list[int]:
        c = self.config
        ids = self.encoder_tokenizer.encode(window_text(text, c.head_chars, c.tail_chars))
        n = c.encoder_head_tokens + c.encoder_tail_tokens
        if len(ids) > n:
            ids = ids[: c.encoder_head_tokens] + (
                ids[-c.encoder_tail_tokens :] if c.encoder_tail_tokens else []
            )
        return [self.cls_id, *ids, self.sep_id]


def assets_digest(cfg: FeaturizerConfig, tokenizer_json: Path, table: np.ndarray) -> str:
    """SHA-256 (hex) of a featurizer's config, static tokenizer and static table: two
    featurizers with the same digest compute the same features."""
    h = hashlib.sha256(cfg.to_json().strip().encode("utf-8"))
    h.update(tokenizer_json.read_bytes())
    h.update(str(table.shape).encode())
    h.update(np.ascontiguousarray(table, dtype=np.float32).tobytes())
    return h.hexdigest()


def featurizer_digest(bundle: Path) -> str:
    """The digest of a bundle directory's featurizer (`Featurizer.digest` once loaded)."""
    cfg = FeaturizerConfig.from_json((bundle / FEATURIZER_FILE).read_text(encoding="utf-8"))
    table = np.load(bundle / STATIC_TABLE, allow_pickle=False)
    return assets_digest(cfg, bundle / STATIC_TOKENIZER, table)


def pad_ids(rows: list[list[int]], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into (ids int64, mask float32); an empty row gets one masked pad."""
    width = max(1, max((len(r) for r in rows), default=1))
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.float32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1.0
    return ids, mask
