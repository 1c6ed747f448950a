"""The predictor's input space: static embedding, MiniLM vector and scaled hand features.

x = L2-normalise([embedding, dense_weight * dense, clip(hand * scale + shift, +-limit)])
over the hand features the model was trained with, where embedding is the unit static
vector minus `center` (the training prompts' mean unit vector), normalised again.
Summed static vectors share a large common direction (mean cosine 0.57-0.87 to their
mean on the public files), which crowds every prompt's cosine to every centroid into a
narrow band; removing it lets the soft clusters separate prompt families. The
parameters are fitted at training time and stored in the bundle (joint_space.json;
bundles without `center` are read as uncentred). It runs outside the ONNX graph: on
the single-request path an ONNX Runtime node costs more than these few operations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from router.bundle import JOINT_SPACE_FILE
from router.text_features import FEATURE_NAMES

EPS = 1e-12
CLIP_SD = 3.0


@dataclass(frozen=True)
class JointSpace:
    dense_weight: float = 1.0
    hand_features: tuple[str, ...] = ()
    hand_scale: tuple[float, ...] = ()
    hand_shift: tuple[float, ...] = ()
    hand_limit: float = 0.0
    center: tuple[float, ...] = ()  # () = uncentred; else one value per static dimension
    # Derived: (feature index, scale, shift) per hand feature, for apply / apply_one.
    _idx: list[int] = field(init=False, repr=False, compare=False)
    _terms: tuple[tuple[int, float, float], ...] = field(init=False, repr=False, compare=False)
    _center: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [n for n in self.hand_features if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(
                f"unknown hand features {unknown}: the bundle was built by another "
                "tier-router version; re-train it or install that version"
            )
        n = len(self.hand_features)
        if len(self.hand_scale) != n or len(self.hand_shift) != n:
            raise ValueError(f"hand_scale and hand_shift need {n} values each")
        values = (
            self.dense_weight,
            self.hand_limit,
            *self.hand_scale,
            *self.hand_shift,
            *self.center,
        )
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ValueError("joint space parameters must be finite numbers")
        if self.dense_weight < 0 or self.hand_limit < 0:
            raise ValueError("dense_weight and hand_limit must be >= 0")
        idx = [FEATURE_NAMES.index(n) for n in self.hand_features]
        object.__setattr__(self, "_idx", idx)
        object.__setattr__(
            self, "_terms", tuple(zip(idx, self.hand_scale, self.hand_shift, strict=True))
        )
        object.__setattr__(self, "_center", np.array(self.center, dtype=np.float32))

    @property
    def hand_indices(self) -> tuple[int, ...]:
        """Position of each hand feature in FEATURE_NAMES."""
        return tuple(self._idx)

    @property
    def uses_hand(self) -> bool:
        return bool(self.hand_features)

    @classmethod
    def fit(
        cls,
        hand: np.ndarray,
        names: Sequence[str],
        weight: float,
        dense_weight: float = 1.0,
        emb: np.ndarray | None = None,
    ) -> JointSpace:
        """Standardise the named hand features on the training rows, times `weight`;
        with `emb` (the training rows' static embeddings), centre on their mean direction."""
        center: tuple[float, ...] = ()
        if emb is not None and len(emb):
            e = np.asarray(emb, dtype=np.float64)
            mean = (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), EPS)).mean(axis=0)
            center = tuple(float(v) for v in mean.astype(np.float32))
        if not names or weight <= 0:
            return cls(dense_weight=float(dense_weight), center=center)
        if hand.ndim != 2 or hand.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected (n, {len(FEATURE_NAMES)}) hand features, got {hand.shape}")
        cols = hand[:, [FEATURE_NAMES.index(n) for n in names]].astype(np.float64)
        mu, sd = cols.mean(axis=0), cols.std(axis=0)
        sd[sd < 1e-9] = 1.0
        return cls(
            dense_weight=float(dense_weight),
            hand_features=tuple(names),
            hand_scale=tuple(float(v) for v in weight / sd),
            hand_shift=tuple(float(v) for v in -weight * mu / sd),
            hand_limit=CLIP_SD * weight,
            center=center,
        )

    def apply(self, emb: np.ndarray, hand: np.ndarray, dense: np.ndarray | None) -> np.ndarray:
        """(n, dims) float32 unit-norm rows from (n, D) static embeddings (any scale),
        (n, F) hand features and, for accurate bundles, (n, 384) MiniLM vectors."""
        e = np.asarray(emb, dtype=np.float64)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), EPS)
        if self.center:
            e = e - np.asarray(self.center, dtype=np.float64)
            e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), EPS)
        parts = [e]
        if dense is not None:
            parts.append(self.dense_weight * np.asarray(dense, dtype=np.float64))
        if self.uses_hand:
            z = hand[:, self._idx] * np.array(self.hand_scale) + np.array(self.hand_shift)
            parts.append(np.clip(z, -self.hand_limit, self.hand_limit))
        x = np.hstack(parts)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)
        return x.astype(np.float32)

    def apply_one(
        self, emb: np.ndarray, hand: Sequence[float], dense: np.ndarray | None
    ) -> np.ndarray:
        """One prompt's row of `apply`, in as few numpy calls as possible: for a handful
        of values each call costs more than the arithmetic, so that runs on floats."""
        lim = self.hand_limit
        z = [min(lim, max(-lim, hand[i] * a + b)) for i, a, b in self._terms]
        inv_emb = 1.0 / max(math.sqrt(float(emb @ emb)), EPS)
        if self.center:
            emb = emb * np.float32(inv_emb) - self._center
            inv_emb = 1.0 / max(math.sqrt(float(emb @ emb)), EPS)
        if dense is None:
            # |[emb / |emb|, z]|^2 = 1 + |z|^2: scale once, no second norm.
            c = 1.0 / math.sqrt(1.0 + sum(v * v for v in z))
            head = emb * np.float32(inv_emb * c)
            return np.concatenate((head, np.array(z, dtype=np.float32) * c)) if z else head
        parts = [emb * np.float32(inv_emb), dense * np.float32(self.dense_weight)]
        if z:
            parts.append(np.array(z, dtype=np.float32))
        x = np.concatenate(parts)
        x *= np.float32(1.0 / max(math.sqrt(float(x @ x)), EPS))
        return x

    def to_json(self) -> str:
        return json.dumps(
            {
                "dense_weight": self.dense_weight,
                "hand_features": list(self.hand_features),
                "hand_scale": list(self.hand_scale),
                "hand_shift": list(self.hand_shift),
                "hand_limit": self.hand_limit,
                "center": list(self.center),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> JointSpace:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"{JOINT_SPACE_FILE} must be a JSON object")
        try:
            return cls(
                dense_weight=float(d["dense_weight"]),
                hand_features=tuple(str(n) for n in d["hand_features"]),
                hand_scale=tuple(float(v) for v in d["hand_scale"]),
                hand_shift=tuple(float(v) for v in d["hand_shift"]),
                hand_limit=float(d["hand_limit"]),
                center=tuple(float(v) for v in d.get("center", ())),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{JOINT_SPACE_FILE}: missing or invalid field: {e}") from None
