from collections.abc import Callable

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

def scan_bytes(raw: bytes, table: bytes, patterns: tuple[bytes, ...]) -> tuple[int, ...]: ...
