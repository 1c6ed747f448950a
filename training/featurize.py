"""Feature matrices for training, computed by the runtime's own featurizer.

Static embeddings, hand features and encoder inputs come from
`router.featurizer.Featurizer`, so training sees exactly what routing will see.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.featurizer import Featurizer, pad_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Features:
    emb: np.ndarray  # (n, static dims), summed static token vectors (JointSpace normalises)
    hand: np.ndarray  # (n, hand features)
    dense: np.ndarray | None  # (n, 384) MiniLM sentence vectors (accurate featurizer)

    def __len__(self) -> int:
        return len(self.emb)

    def take(self, idx: np.ndarray) -> Features:
        return Features(
            self.emb[idx], self.hand[idx], None if self.dense is None else self.dense[idx]
        )


def featurize(
    texts: Sequence[str],
    featurizer: Featurizer,
    encoder_model: Path | None = None,
    *,
    batch_size: int = 32,
    progress_every: float = 10.0,
) -> Features:
    n = len(texts)
    emb = np.zeros((n, featurizer.dims), dtype=np.float32)
    hand = np.zeros((n, len(featurizer.config.hand_features)), dtype=np.float32)
    t0 = last = time.monotonic()
    for i, text in enumerate(texts):
        emb[i], hand[i] = featurizer.static(text)
        if time.monotonic() - last > progress_every:
            last = time.monotonic()
            log.info("featurized %d/%d prompts (static)", i + 1, n)
    log.info("static features for %d prompts in %.1f s", n, time.monotonic() - t0)
    dense = None
    if featurizer.config.kind == "accurate":
        if encoder_model is None:
            raise ValueError("the accurate featurizer needs the encoder model")
        dense = encode_dense(texts, featurizer, encoder_model, batch_size, progress_every)
    return Features(emb, hand, dense)


def encode_dense(
    texts: Sequence[str],
    featurizer: Featurizer,
    encoder_model: Path,
    batch_size: int = 32,
    progress_every: float = 10.0,
) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(encoder_model), so, providers=["CPUExecutionProvider"])
    rows = [featurizer.encoder_ids(t) for t in texts]
    order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths batch well
    out = np.zeros((len(rows), 384), dtype=np.float32)
    t0 = last = time.monotonic()
    for start in range(0, len(rows), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_ids([rows[i] for i in idx])
        res = sess.run(None, {"input_ids": ids, "attention_mask": mask.astype(np.int64)})[0]
        out[idx] = res
        if time.monotonic() - last > progress_every:
            last = time.monotonic()
            log.info("encoded %d/%d prompts with MiniLM", start + len(idx), len(rows))
    log.info("MiniLM features for %d prompts in %.1f s", len(rows), time.monotonic() - t0)
    return out
