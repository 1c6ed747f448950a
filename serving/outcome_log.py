"""The outcome log: one JSON record per request, written before the call returns.

The local sink appends each record with a single write() of one full line to a file
opened O_APPEND, so a crash can at worst leave one torn last line; `read_log` skips
such lines. A record that a sink fails to take is held in a bounded in-memory backlog
and retried in order by a background thread, so a failing disk or bucket delays
records instead of dropping them, until the backlog is full (a bound in bytes and one in
records): then the oldest are dropped, counted in `stats()` (and its CloudWatch metric,
serving.metrics.backlog_emf) and logged (see OutcomeLogger).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import inspect
import io
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from serving.log_source import expand, iter_source_lines
from serving.outcome_record import SCHEMA as SCHEMA  # the record's format lives there

log = logging.getLogger(__name__)


class PromptStorage(enum.Enum):
    """What of the prompt goes into the log.

    FEATURES (the default): the router's own features of the prompt (what retraining the
    router needs), its length and, with a key, an HMAC for joins; no text. STORE: the
    text (the opt-in that `feedback` and retraining the answer verifier need). HASH: an
    HMAC and the length. DROP: the length alone. Answers are logged as text only under
    STORE (HASH: an HMAC; FEATURES and DROP: the length)."""

    FEATURES = "features"
    STORE = "store"
    HASH = "hash"
    DROP = "drop"


# The key for HASH and for FEATURES' `hmac` when the config leaves prompt_hash_key empty.
PROMPT_KEY_ENV = "TIER_ROUTER_PROMPT_KEY"

# Why a FEATURES record carries no features (its `reason`).
NO_FEATURES_ROUTER = "router_without_features"  # a fixed or fail-safe router: no featurizer
NO_FEATURES_ROUTE_ERROR = "route_error"  # the router raised; the fail-safe tier served
NO_FEATURES_ENCODE_ERROR = "encode_error"  # the features could not be encoded (a bug)


def prompt_key(configured: bytes = b"") -> bytes:
    """The prompt HMAC key: the configured one, else $TIER_ROUTER_PROMPT_KEY (UTF-8), else
    b"" (no key)."""
    if configured:
        return bytes(configured)
    return os.environ.get(PROMPT_KEY_ENV, "").encode("utf-8")


def _hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def prompt_field(
    text: str,
    storage: PromptStorage,
    hash_key: bytes = b"",
    features: Any | None = None,
    no_features: str | None = None,
) -> dict[str, Any]:
    """The record's `prompt` object. Only STORE keeps the text. Under FEATURES,
    `features` is the router's `PromptFeatures` of this text (logged as `features`); when
    it is None, `no_features` says why (logged as `reason`). `hash_key` (non-empty) adds
    `hmac` under FEATURES and is required by HASH. Never raises for FEATURES."""
    if storage is PromptStorage.FEATURES:
        out: dict[str, Any] = {"storage": "features", "chars": len(text)}
        if hash_key:
            out["hmac"] = _hmac(hash_key, text)
        if features is not None:
            try:
                out["features"] = features.to_log()
            except Exception:  # a record with a reason beats a failed request
                log.exception("prompt features could not be encoded")
                out["reason"] = NO_FEATURES_ENCODE_ERROR
        else:
            out["reason"] = no_features or NO_FEATURES_ROUTER
        return out
    if storage is PromptStorage.STORE:
        return {"storage": "store", "text": text}
    if storage is PromptStorage.HASH:
        check_hash_key(hash_key)
        return {"storage": "hash", "sha256": _hmac(hash_key, text), "chars": len(text)}
    return {"storage": "drop", "chars": len(text)}


def answer_field(text: str, storage: PromptStorage, hash_key: bytes = b"") -> dict[str, Any]:
    """An attempt's `answer` object: the text only under STORE, an HMAC under HASH, the
    length alone under FEATURES (the answer's features are not logged) and DROP."""
    if storage is PromptStorage.FEATURES:
        return {"storage": "features", "chars": len(text)}
    return prompt_field(text, storage, hash_key)


def check_hash_key(hash_key: bytes) -> None:
    """HASH needs a secret key: an unkeyed SHA-256 of a short prompt is reversed by
    hashing guesses, so the log would hold the text in all but name."""
    if not isinstance(hash_key, bytes | bytearray) or not hash_key:
        raise ValueError(
            "prompt_storage=hash needs a non-empty secret prompt_hash_key (bytes) or "
            f"${PROMPT_KEY_ENV}: an unkeyed hash of a short prompt can be reversed by "
            "guessing; use prompt_storage=drop to log no prompt at all"
        )


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


def read_log(
    paths: str | Path | Iterable[str | Path],
    stats: ReadStats | None = None,
    s3: Any | None = None,
) -> Iterator[dict[str, Any]]:
    """Records from outcome logs, streamed: local files or `s3://bucket/prefix` (every
    object under it), plain or gzipped, skipping torn or corrupt lines. Memory holds one
    block of one source at a time (serving/log_source.py); `s3` is a boto3 client (default:
    one from the environment)."""
    st = stats if stats is not None else ReadStats()
    for src in expand(paths, s3):
        st.files.append(src.name)
        for item in iter_source_lines(src, s3):
            if isinstance(item, str):
                # A gzipped log cut short (a crash) or damaged: keep every line before it.
                log.warning("%s: %s; read the lines before it", src.name, item)
                st.corrupt_files.append(src.name)
                st.torn_tail = True
                continue
            if not item.data.strip():
                continue
            try:
                obj = json.loads(item.data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                st.bad_lines += 1
                if item.last:
                    st.torn_tail = True
                continue
            if not isinstance(obj, dict):
                st.bad_lines += 1
                continue
            st.records += 1
            yield obj


@dataclass
class _SinkQueue:
    """One sink's records waiting to be written, oldest first, and what became of them."""

    sink: LogSink
    pending: deque[bytes] = field(default_factory=deque)  # encoded lines: bytes are the bound
    pending_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # one write at a time
    inflight: bytes | None = None  # the head the flusher is writing now
    inflight_dropped: bool = False  # the bound dropped that head mid-write
    written: int = 0
    failures: int = 0
    dropped: int = 0
    dropped_bytes: int = 0
    dropped_this_outage: int = 0

    def write_line(self, line: bytes) -> None:
        """Write one held (encoded) record: as bytes when the sink takes them."""
        write_bytes = getattr(self.sink, "write_bytes", None)
        if write_bytes is not None:
            write_bytes(line)
        else:
            self.sink.write(json.loads(line))


DEFAULT_MAX_BACKLOG_BYTES = 64 << 20  # per sink: minutes of a busy service's records


class OutcomeLogger:
    """Fans each record out to its sinks; never raises into the serving path.

    While a sink takes records, each one is written on the caller's thread before
    `write` returns. When a sink refuses one, that record and every later one for the
    sink go to its in-memory backlog, which a background thread retries in order (with
    backoff), so requests never wait on a sink that is down. Held records are kept
    encoded, and a sink's backlog holds at most `max_backlog_bytes` of them (the bound
    that matters for memory: records differ in size by 1000x with stored prompts and
    answers) and at most `max_backlog` records: past either, the oldest is dropped,
    counted in `stats()` (records and bytes; `serving.metrics.backlog_emf` makes it a
    CloudWatch metric) and logged (at 1, 10, 100, ... drops per outage, and when the sink
    comes back), since an unbounded backlog would take the process down with the sink.
    """

    def __init__(
        self,
        sinks: Sequence[LogSink],
        max_backlog: int = 100_000,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        retry_interval_s: float = 0.05,
        max_retry_interval_s: float = 5.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        if isinstance(max_backlog, bool) or not isinstance(max_backlog, int) or max_backlog < 1:
            raise ValueError(f"max_backlog must be an integer >= 1, got {max_backlog!r}")
        if (
            isinstance(max_backlog_bytes, bool)
            or not isinstance(max_backlog_bytes, int)
            or max_backlog_bytes < 1
        ):
            raise ValueError(
                f"max_backlog_bytes must be an integer >= 1, got {max_backlog_bytes!r}"
            )
        if not 0 < retry_interval_s <= max_retry_interval_s:
            raise ValueError(
                "need 0 < retry_interval_s <= max_retry_interval_s, got "
                f"{retry_interval_s}, {max_retry_interval_s}"
            )
        self._queues = [_SinkQueue(s) for s in sinks]
        self._max_backlog = max_backlog
        self._max_backlog_bytes = max_backlog_bytes
        self._retry_s = retry_interval_s
        self._max_retry_s = max_retry_interval_s
        self._close_timeout_s = close_timeout_s
        self._cond = threading.Condition()  # guards every queue's pending and counters
        self._retry_now = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False
        self._drains: list[Callable[[], Callable[[], None] | None]] = []

    @property
    def backlog(self) -> int:
        with self._cond:
            return sum(len(q.pending) for q in self._queues)

    @property
    def backlog_bytes(self) -> int:
        with self._cond:
            return sum(q.pending_bytes for q in self._queues)

    @property
    def dropped(self) -> int:
        with self._cond:
            return sum(q.dropped for q in self._queues)

    def stats(self) -> dict[str, Any]:
        """Totals and per-sink counts: written, held in the backlog (records and bytes),
        dropped (records and bytes), failed writes."""
        with self._cond:
            per = [
                {"sink": repr(q.sink), "written": q.written, "backlog": len(q.pending),
                 "backlog_bytes": q.pending_bytes, "dropped": q.dropped,
                 "dropped_bytes": q.dropped_bytes, "failures": q.failures}
                for q in self._queues
            ]  # fmt: skip
        return {
            "backlog": sum(p["backlog"] for p in per),
            "backlog_bytes": sum(p["backlog_bytes"] for p in per),
            "dropped": sum(p["dropped"] for p in per),
            "dropped_bytes": sum(p["dropped_bytes"] for p in per),
            "max_backlog": self._max_backlog,
            "max_backlog_bytes": self._max_backlog_bytes,
            "sinks": per,
        }

    def write(self, record: dict[str, Any]) -> bool:
        """True if every sink took the record now; False if some sink holds it for later."""
        all_ok = True
        for q in self._queues:
            try:
                all_ok &= self._write_one(q, record)
            except Exception:  # a bug here must still not fail the request
                log.exception("outcome logging to %r failed", q.sink)
                all_ok = False
        return all_ok

    def _write_one(self, q: _SinkQueue, record: dict[str, Any]) -> bool:
        with self._cond:
            if self._closed:
                return self._refuse_closed(q, record)
            if q.pending:  # keep order: behind what the sink still owes
                self._hold(q, record)
                return False
        try:
            # close() closes the sink under its lock, so a write either lands before
            # the close or sees `_closed` here: never a write to a closed sink.
            with q.lock:
                with self._cond:
                    if self._closed:
                        return self._refuse_closed(q, record)
                q.sink.write(record)
        except Exception as e:
            with self._cond:
                q.failures += 1
                if self._closed:  # close() already made its last attempt
                    return self._refuse_closed(q, record)
                first = not q.pending
                self._hold(q, record)
            if first:
                log.error("outcome sink %r failed (%s: %s); holding its records and retrying "
                          "in the background", q.sink, type(e).__name__, e)
            return False
        with self._cond:
            q.written += 1
        return True

    def _refuse_closed(self, q: _SinkQueue, record: dict[str, Any]) -> bool:
        """A write after close(): counted as dropped and logged (caller holds _cond)."""
        q.dropped += 1
        log.error("outcome logger is closed: record %s not written", record.get("request_id"))
        return False

    def _hold(self, q: _SinkQueue, record: dict[str, Any]) -> None:
        """Append to the backlog (caller holds _cond); past a bound drop the oldest."""
        line = encode_record(record)
        q.pending.append(line)
        q.pending_bytes += len(line)
        while len(q.pending) > self._max_backlog or (
            q.pending_bytes > self._max_backlog_bytes and len(q.pending) > 1
        ):
            if q.inflight is not None and q.pending[0] is q.inflight:
                q.inflight_dropped = True  # un-counted if that write still succeeds
            lost = q.pending.popleft()
            q.pending_bytes -= len(lost)
            q.dropped += 1
            q.dropped_bytes += len(lost)
            q.dropped_this_outage += 1
            n = q.dropped_this_outage
            if str(n).rstrip("0") == "1":  # 1, 10, 100, ...: a trail, not a flood
                log.error(
                    "outcome sink %r: backlog full (%d records, %d bytes; bounds %d records, "
                    "%d bytes): dropped the oldest held record (request_id %s); %d dropped in "
                    "this outage, %d in all",
                    q.sink, len(q.pending), q.pending_bytes, self._max_backlog,
                    self._max_backlog_bytes, _request_id(lost), n, q.dropped,
                )
        if self._flusher is None and not self._closed:
            self._flusher = threading.Thread(
                target=self._flush_loop, name="outcome-log-flusher", daemon=True
            )
            self._flusher.start()
        self._cond.notify_all()

    def _flush_loop(self) -> None:
        delay = self._retry_s
        while True:
            with self._cond:
                while not self._closed and not any(q.pending for q in self._queues):
                    self._cond.wait()
                if self._closed:
                    return  # close() makes the last attempt
            if self._drain_once():
                delay = self._retry_s
                continue
            self._retry_now.wait(delay)
            self._retry_now.clear()
            delay = min(delay * 2, self._max_retry_s)

    def _drain_once(self) -> bool:
        """Write every backlog in order until a sink refuses; True if all are empty."""
        ok = True
        for q in self._queues:
            delivered = 0
            while True:
                with self._cond:
                    if not q.pending:
                        break
                    rec = q.inflight = q.pending[0]  # stays queued until written: order holds
                try:
                    with q.lock:
                        q.write_line(rec)
                except Exception:
                    with self._cond:
                        q.inflight, q.inflight_dropped = None, False
                        q.failures += 1
                    ok = False
                    break
                with self._cond:
                    # Dropped from the queue while written (by the bound, or by a close
                    # that gave up waiting): delivered after all, so not counted lost.
                    if q.inflight_dropped:
                        q.dropped -= 1
                        q.dropped_bytes -= len(rec)
                        q.dropped_this_outage = max(0, q.dropped_this_outage - 1)
                    elif q.pending and q.pending[0] is rec:
                        q.pending.popleft()
                        q.pending_bytes -= len(rec)
                    q.inflight, q.inflight_dropped = None, False
                    q.written += 1
                    delivered += 1
                    drained = not q.pending
                    lost, q.dropped_this_outage = (
                        (q.dropped_this_outage, 0) if drained else (0, q.dropped_this_outage))
                    self._cond.notify_all()
                if drained:
                    log.warning("outcome sink %r is back: wrote %d held record(s)%s", q.sink,
                                delivered, f"; {lost} were dropped while it was down" if lost
                                else "")
        return ok

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Retry the backlogs now and wait up to `timeout_s` for them to empty."""
        deadline = time.monotonic() + timeout_s
        self._retry_now.set()
        with self._cond:
            while any(q.pending for q in self._queues):
                left = deadline - time.monotonic()
                if left <= 0 or self._flusher is None:
                    return False
                self._cond.wait(left)
        return True

    def before_close(self, drain: Callable[[], None]) -> None:
        """Call `drain` first thing in close(): a writer with records still in flight (the
        client's cascade exploration calls) writes them before the sinks close. Held by
        weak reference for bound methods, so a logger does not keep a client alive."""
        ref: Callable[[], Callable[[], None] | None] = (
            weakref.WeakMethod(drain) if inspect.ismethod(drain) else (lambda: drain)
        )
        with self._cond:
            self._drains.append(ref)

    def close(self) -> None:
        """Let writers drain (before_close), stop the flusher, make one last attempt at
        each backlog, then close the sinks."""
        with self._cond:
            drains, self._drains = self._drains, []
        for ref in drains:
            fn = ref()
            if fn is not None:
                try:
                    fn()
                except Exception:  # closing must go on
                    log.exception("a writer failed to drain before the log closed")
        with self._cond:
            self._closed = True
            flusher = self._flusher
            self._cond.notify_all()
        self._retry_now.set()
        stuck = False
        if flusher is not None:
            flusher.join(self._close_timeout_s)
            stuck = flusher.is_alive()  # inside a sink write that hangs
        if not stuck:
            self._drain_once()
        with self._cond:
            for q in self._queues:
                if q.pending:
                    if q.inflight is not None and q.pending[0] is q.inflight:
                        q.inflight_dropped = True  # a stuck write may still land
                    n = len(q.pending)
                    q.dropped += n
                    q.dropped_bytes += q.pending_bytes
                    q.pending.clear()
                    q.pending_bytes = 0
                    log.error("outcome sink %r: %d held record(s) not written at close",
                              q.sink, n)
        for q in self._queues:
            try:
                if stuck:  # its lock is held by the hung write; close without it
                    q.sink.close()
                else:
                    with q.lock:
                        q.sink.close()
            except Exception:
                log.exception("closing outcome sink %r failed", q.sink)


def _request_id(line: bytes) -> str | None:
    """The request id of a held (encoded) record, for the drop message."""
    try:
        rid = json.loads(line).get("request_id")
    except (ValueError, AttributeError):
        return None
    return rid if isinstance(rid, str) else None


def dumps_lines(records: Iterable[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    for r in records:
        buf.write(encode_record(r))
    return buf.getvalue()
