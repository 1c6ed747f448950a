"""Router.route()'s compiled scoring for static-embedding bundles.

For one prompt, the Python path (Featurizer -> text_features -> JointSpace.apply_one ->
ClusterPredictor.p_pass) spends most of its time in call overhead and allocations.
`CompiledRoute` hands the same computation, with the same weights and feature
definitions, to one C call (router/_hotpath.c, FastPath). `Router.load` compares both
paths on probe prompts before it uses this one.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np

from router.cluster_predictor import ClusterPredictor
from router.compiled import HOTPATH
from router.featurizer import Featurizer, window_text
from router.joint_space import JointSpace
from router.text_features import MAX_SCAN, compiled_tables

# Prompts that exercise every feature: empty, whitespace only, code, math, choices,
# non-ASCII, control characters and a long few-shot-like text.
PROBES = (
    "",
    " \n\t ",
    "What is the capital of France?",
    "def add(a, b):\n    return a + b  # why does this fail for lists? [1] == {x}",
    "Solve for x: 3x^2 + 2x - 5 = 0, then compute 15% of $x / 2.",
    "Which is correct?\nA) 12\nB) 14\nC) 16\nD) 18\n(A) first (B) second",
    "Compare the pros and cons of Python versus Java. Explain why, step by step.",
    "naïve café Ünïcödé 東京 emoji \U0001f600 \x00\x07 control \ud800 surrogate",
    "Q: 2+2? A: 4.\n" * 300 + "Q: what is the derivative of x^3?",
)
TOLERANCE = 1e-5
Lookup = Callable[[str], int | tuple[int, ...]]


class CompiledRoute:
    def __init__(
        self,
        featurizer: Featurizer,
        space: JointSpace,
        predictor: ClusterPredictor,
        kernels: ModuleType,
    ):
        emb = featurizer.embedder
        if emb.index is None:
            raise ValueError("the static embedder was built without the compiled kernels")
        keywords, symbols, group_bits, patterns = compiled_tables()
        self._config = featurizer.config
        self._lookup = emb.row_or_ids
        self._path = kernels.FastPath(
            index=emb.index,
            rows=emb.chunk_rows,
            tokens=emb.token_rows,
            empty=emb.empty_row,
            dims=emb.dims,
            keywords=keywords,
            symbols=symbols,
            hand_idx=space.hand_indices,
            hand_scale=space.hand_scale,
            hand_shift=space.hand_shift,
            hand_limit=space.hand_limit,
            group_bits=group_bits,
            patterns=patterns,
            centroids=predictor.centroids,
            rates=predictor.set_rates,
            sets=predictor.sets,
            center=np.asarray(space.center, dtype=np.float32),
        )

    @classmethod
    def build(
        cls,
        featurizer: Featurizer,
        space: JointSpace,
        predictor: ClusterPredictor | None,
        kernels: ModuleType | None = HOTPATH,
    ) -> CompiledRoute | None:
        """None when this bundle or build cannot use it (the Python path is used)."""
        if kernels is None or predictor is None or featurizer.config.kind != "fast":
            return None
        try:
            return cls(featurizer, space, predictor, kernels)
        except ValueError:  # shapes beyond the C limits, e.g. thousands of clusters
            return None

    def _inputs(self, text: str) -> tuple[str, bytes, int, Lookup]:
        c = self._config
        low = window_text(text, c.head_chars, c.tail_chars).lower()
        return low, text[:MAX_SCAN].encode("utf-8", "surrogatepass"), len(text), self._lookup

    def p_pass(self, text: str) -> list[float]:
        """P(pass) per tier."""
        p: list[float] = self._path.p_pass(*self._inputs(text))
        return p

    def features(self, text: str) -> list[float]:
        """The hand features as the C code computes them (for parity tests)."""
        f: list[float] = self._path.features(*self._inputs(text))
        return f
