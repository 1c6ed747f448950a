from collections.abc import Callable, Sequence

import numpy as np

class ChunkIndex:
    def __init__(self, limit: int) -> None: ...
    def __len__(self) -> int: ...
    def pool(
        self,
        text: str,
        rows: np.ndarray,
        tokens: np.ndarray,
        out: np.ndarray,
        lookup: Callable[[str], int | tuple[int, ...]],
    ) -> int: ...

class FastPath:
    def __init__(
        self,
        *,
        index: ChunkIndex,
        rows: np.ndarray,
        tokens: np.ndarray,
        empty: np.ndarray,
        dims: int,
        keywords: int,
        symbols: int,
        hand_idx: Sequence[int],
        hand_scale: Sequence[float],
        hand_shift: Sequence[float],
        hand_limit: float,
        group_bits: bytes,
        patterns: tuple[bytes, ...],
        centroids: np.ndarray,
        rates: np.ndarray,
        sets: int,
        center: np.ndarray,
    ) -> None: ...
    def p_pass(
        self, low: str, raw: bytes, n_chars: int, lookup: Callable[[str], int | tuple[int, ...]]
    ) -> list[float]: ...
    def features(
        self, low: str, raw: bytes, n_chars: int, lookup: Callable[[str], int | tuple[int, ...]]
    ) -> list[float]: ...

def scan_bytes(raw: bytes, table: bytes, patterns: tuple[bytes, ...]) -> tuple[int, ...]: ...
