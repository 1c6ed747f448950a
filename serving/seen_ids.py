"""Which request ids a read has seen: exact enough, in 8 bytes per id.

Deduplicating a month of outcome logs by request id needs the ids seen so far. A Python
set of strings costs about 100 bytes per id (500 MB for five million); this keeps a
64-bit keyed hash of each id in one sorted numpy array (plus a small set of the newest),
8 bytes per id. Two different ids share a 64-bit hash with probability about n^2 / 2^65
(1 in 400,000 for five million ids), in which case the later one would be taken for a
duplicate: the price of not holding the ids themselves. The distributed path
(training/scale_table.py) deduplicates on the ids themselves.
"""

from __future__ import annotations

import hashlib

import numpy as np

_BUFFER = 1 << 16  # newest hashes kept in a set before they join the sorted array


def id_hash(request_id: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(request_id.encode("utf-8"), digest_size=8).digest(), "little"
    )


class SeenIds:
    """`add(id)` is True the first time an id is added, False after."""

    def __init__(self) -> None:
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._recent: set[int] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def add(self, request_id: str) -> bool:
        h = id_hash(request_id)
        if h in self._recent:
            return False
        if len(self._sorted):
            i = int(np.searchsorted(self._sorted, np.uint64(h)))
            if i < len(self._sorted) and int(self._sorted[i]) == h:
                return False
        self._recent.add(h)
        if len(self._recent) >= _BUFFER:
            self._compact()
        return True

    def _compact(self) -> None:
        fresh = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        merged = np.concatenate([self._sorted, fresh])
        merged.sort(kind="stable")
        self._sorted = merged
        self._recent = set()

    @property
    def nbytes(self) -> int:
        """Memory of the sorted hashes (the part that grows with the log)."""
        return int(self._sorted.nbytes)
