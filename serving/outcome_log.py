"""The outcome log: one JSON record per request, written before the call returns.

The local sink appends each record with a single write() of one full line to a file
opened O_APPEND, so a crash can at worst leave one torn last line; `read_log` skips
such lines. A record that a sink fails to take is kept and offered again on the
next write, so a failing disk or bucket delays records instead of dropping them.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import hmac
import io
import json
import logging
import os
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

log = logging.getLogger(__name__)

SCHEMA = "tier-router.outcome/1"


class PromptStorage(enum.Enum):
    """What of the prompt goes into the log: the text, a keyed hash, or nothing."""

    STORE = "store"
    HASH = "hash"
    DROP = "drop"


def prompt_field(text: str, storage: PromptStorage, hash_key: bytes = b"") -> dict[str, Any]:
    """The record's `prompt` object. Only STORE keeps text usable for retraining."""
    if storage is PromptStorage.STORE:
        return {"storage": "store", "text": text}
    if storage is PromptStorage.HASH:
        digest = hmac.new(hash_key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return {"storage": "hash", "sha256": digest, "chars": len(text)}
    return {"storage": "drop", "chars": len(text)}


class LogSink(Protocol):
    """Somewhere records go. `write` must not return before the record is durable enough."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def encode_record(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class JsonlSink:
    """Append-only JSONL file; each record is one os.write of a whole line.

    `fsync=True` also survives power loss, at a cost per request. If the file ends
    in a torn line (a crash mid-write), a newline is written first so the next
    record starts on its own line.
    """

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        if _ends_torn(self.path):
            self._write_all(b"\n")

    def write(self, record: dict[str, Any]) -> None:
        self.write_bytes(encode_record(record))

    def write_bytes(self, line: bytes) -> None:
        with self._lock:
            self._write_all(line)
            if self.fsync:
                os.fsync(self._fd)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _ends_torn(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


@dataclass
class ReadStats:
    """What `read_log` skipped: unparseable lines (a torn tail is the usual one)."""

    records: int = 0
    bad_lines: int = 0
    torn_tail: bool = False
    files: list[str] = field(default_factory=list)
    corrupt_files: list[str] = field(default_factory=list)


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    raw = path.open("rb")
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def read_log(
    paths: str | Path | Iterable[str | Path], stats: ReadStats | None = None
) -> Iterator[dict[str, Any]]:
    """Records from outcome logs (plain or gzipped), skipping torn or corrupt lines."""
    st = stats if stats is not None else ReadStats()
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    for p in items:
        path = Path(p)
        st.files.append(str(path))
        data, damage = _read_salvaging(path)
        if damage is not None:
            # A gzipped log cut short (a crash) or damaged: keep every line before the damage.
            log.warning("%s: %s; reading the %d bytes before it", path, damage, len(data))
            st.corrupt_files.append(str(path))
            st.torn_tail = True
        lines = data.split(b"\n")
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                st.bad_lines += 1
                if i == len(lines) - 1:
                    st.torn_tail = True
                continue
            if not isinstance(obj, dict):
                st.bad_lines += 1
                continue
            st.records += 1
            yield obj


def _read_salvaging(path: Path) -> tuple[bytes, str | None]:
    """The file's (decompressed) bytes, and what stopped the read early, if anything."""
    chunks: list[bytes] = []
    with _open_maybe_gzip(path) as fh:
        read1 = getattr(fh, "read1", fh.read)  # one step at a time: keep all before the damage
        try:
            while block := read1(1 << 16):
                chunks.append(block)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            return b"".join(chunks), f"compressed data unreadable ({type(e).__name__}: {e})"
    return b"".join(chunks), None


class OutcomeLogger:
    """Fans each record out to its sinks; never raises into the serving path.

    A sink that fails keeps its records in a backlog that is retried, in order,
    before that sink's next record.
    """

    def __init__(self, sinks: Sequence[LogSink], max_backlog: int = 1_000_000) -> None:
        self._sinks = list(sinks)
        self._backlog: list[list[dict[str, Any]]] = [[] for _ in self._sinks]
        self._lock = threading.Lock()
        self._max_backlog = max_backlog

    @property
    def backlog(self) -> int:
        return sum(len(b) for b in self._backlog)

    def write(self, record: dict[str, Any]) -> bool:
        """True if every sink took the record (and any backlog) now."""
        all_ok = True
        for i, sink in enumerate(self._sinks):
            with self._lock:
                pending = self._backlog[i]
                pending.append(record)
                while pending:
                    try:
                        sink.write(pending[0])
                    except Exception:
                        log.exception(
                            "outcome sink %r failed; %d record(s) held", sink, len(pending)
                        )
                        all_ok = False
                        if len(pending) > self._max_backlog:
                            log.critical("outcome backlog over %d records", self._max_backlog)
                        break
                    pending.pop(0)
        return all_ok

    def close(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing outcome sink %r failed", sink)


def dumps_lines(records: Iterable[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    for r in records:
        buf.write(encode_record(r))
    return buf.getvalue()
