"""A progress line on stderr: done/total, rate, spend so far and ETA.

On a terminal it redraws one line; in a log (CI, nohup) it prints a line every
`log_interval_s` so the log stays short.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        tty_interval_s: float = 0.2,
        log_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = tty_interval_s if self.tty else log_interval_s
        self.done = 0
        self.spend_usd = 0.0
        self.started = clock()
        self._last = float("-inf")
        self._lock = threading.Lock()

    def render(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = _hms(left / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.label} {self.done}/{self.total} ({pct:.0f}%) {rate:.1f}/s "
            f"spent ${self.spend_usd:.4f} ETA {eta}"
        )

    def update(self, advance: int = 0, spend_usd: float | None = None, force: bool = False) -> None:
        with self._lock:
            self.done += advance
            if spend_usd is not None:
                self.spend_usd = spend_usd
            now = self.clock()
            if not self.enabled or (not force and now - self._last < self.interval):
                return
            self._last = now
            line = self.render()
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.update(force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        """A free-form status line (batch job states), printed on its own line."""
        if self.enabled:
            self.stream.write(("\r\x1b[K" if self.tty else "") + message + "\n")
            self.stream.flush()
