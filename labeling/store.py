"""The on-demand output: an append-only outcomes file that is its own checkpoint.

Each fully labeled prompt is one line, flushed as soon as it is graded, so a crash
loses at most the prompts in flight. On restart the file is read back, a torn last
line (the crash hit mid-write) is cut off, and the ids present are skipped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO

from outcomes import OutcomeRecord, OutcomesError, parse_record


class OutcomeAppender:
    def __init__(self, path: Path, fsync_interval_s: float = 1.0) -> None:
        if path.suffix == ".gz":
            raise ValueError(f"{path}: on-demand output must be plain .jsonl (it is appended to)")
        self.path = path
        self.fsync_interval_s = fsync_interval_s
        self._fh: IO[str] | None = None
        self._last_sync = 0.0

    def load_done(self) -> set[str]:
        """Ids already labeled; cuts a torn final line. Raises OutcomesError on a bad line."""
        done: set[str] = set()
        if not self.path.exists():
            return done
        good_end = 0
        with self.path.open("rb") as f:
            lineno = 0
            for lineno, raw in enumerate(f, 1):
                end = good_end + len(raw)
                if not raw.endswith(b"\n"):
                    break  # torn tail: written without its newline when the run died
                if raw.strip():
                    where = f"{self.path}:{lineno}"
                    try:
                        rec = parse_record(json.loads(raw), where)
                    except ValueError as e:
                        msg = str(e) if isinstance(e, OutcomesError) else f"{where}: invalid JSON"
                        raise OutcomesError(
                            f"{msg} (not a torn last line; fix or move the file)"
                        ) from None
                    done.add(rec.id)
                good_end = end
        if good_end != self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good_end)
        return done

    def append(self, record: OutcomeRecord) -> None:
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
        fh = self._fh
        fh.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        fh.flush()
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval_s:
            os.fsync(fh.fileno())
            self._last_sync = now

    def close(self) -> None:
        if self._fh is not None:
            fh = self._fh
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            self._fh = None
