"""S3 sink for the outcome log: records spool to local disk, batches upload to S3.

Every record is first appended to a local spool file (same crash-safe writer as the
JSONL sink), so the serving path never waits on S3 and never loses a record when S3
is down: sealed batches stay on disk until an upload succeeds, across restarts.
Object keys are fixed per batch, so re-uploading after an ambiguous failure is
harmless.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from serving.outcome_log import JsonlSink, encode_record

log = logging.getLogger(__name__)

_CURRENT = "current.jsonl"


@dataclass(frozen=True)
class S3SinkConfig:
    """Where and how often to upload. `endpoint_url` is for moto or another S3 lookalike."""

    bucket: str
    spool_dir: str
    prefix: str = "outcomes/"
    batch_size: int = 500
    max_batch_age_s: float = 60.0
    upload_interval_s: float = 10.0
    region: str = "us-east-1"
    endpoint_url: str | None = None
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 10.0
    max_attempts: int = 3
    fsync: bool = False
    dummy_credentials: bool = False

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("S3SinkConfig.bucket must be set")
        if self.batch_size < 1:
            raise ValueError(f"S3SinkConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.max_batch_age_s <= 0 or self.upload_interval_s <= 0:
            raise ValueError("S3SinkConfig intervals must be > 0")
        if self.prefix and not self.prefix.endswith("/"):
            raise ValueError(f"S3SinkConfig.prefix must end with '/', got {self.prefix!r}")


class S3Sink:
    """An outcome-log sink that spools locally and uploads JSONL batches to S3."""

    def __init__(self, cfg: S3SinkConfig, s3_client: Any | None = None) -> None:
        self.cfg = cfg
        self.spool = Path(cfg.spool_dir)
        self.spool.mkdir(parents=True, exist_ok=True)
        self._s3 = s3_client or _make_s3_client(cfg)
        self._lock = threading.Lock()
        self._upload_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.uploaded_batches = 0
        self.failed_uploads = 0
        # A batch left open by a crash is sealed as is; read_log skips any torn tail.
        self._seal_locked()
        self._writer = JsonlSink(self.spool / _CURRENT, fsync=cfg.fsync)
        self._count = 0
        self._opened = time.monotonic()

    # -- LogSink ---------------------------------------------------------------
    def write(self, record: dict[str, Any]) -> None:
        self.write_bytes(encode_record(record))

    def write_bytes(self, line: bytes) -> None:
        """One encoded record (the outcome logger's backlog holds records encoded)."""
        with self._lock:
            self._writer.write_bytes(line)
            self._count += 1
            full = self._count >= self.cfg.batch_size
            if full:
                self._rotate_locked()
        if full:
            self._wake.set()

    def close(self) -> None:
        """Stop the uploader, seal the open batch and try one last upload."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        with self._lock:
            self._writer.close()

    # -- uploads ---------------------------------------------------------------
    def start(self) -> S3Sink:
        """Upload in a background thread every `upload_interval_s` (or when a batch fills)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="s3-outcome-sink", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.cfg.upload_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                if self._count and time.monotonic() - self._opened >= self.cfg.max_batch_age_s:
                    self._rotate_locked()
            self.upload_ready()

    def flush(self) -> int:
        """Seal the open batch and upload every sealed one; returns how many are still pending."""
        with self._lock:
            if self._count:
                self._rotate_locked()
        self.upload_ready()
        return len(self.pending_batches())

    def pending_batches(self) -> list[Path]:
        return sorted(self.spool.glob("batch-*.jsonl"))

    def upload_ready(self) -> int:
        """Upload sealed batches oldest first; stops at the first failure. Never raises."""
        done = 0
        with self._upload_lock:
            for path in self.pending_batches():
                key = self._key(path)
                try:
                    body = path.read_bytes()
                    self._s3.put_object(
                        Bucket=self.cfg.bucket,
                        Key=key,
                        Body=body,
                        ContentType="application/x-ndjson",
                    )
                except Exception as e:
                    self.failed_uploads += 1
                    log.warning("S3 upload of %s failed (%s); kept in spool", path.name, e)
                    break
                path.unlink()
                done += 1
                self.uploaded_batches += 1
        return done

    def _key(self, path: Path) -> str:
        # batch-<epoch ns>-<uuid>.jsonl -> prefix/YYYY/MM/DD/batch-....jsonl
        try:
            ns = int(path.name.split("-")[1])
        except (IndexError, ValueError):
            ns = time.time_ns()
        day = time.strftime("%Y/%m/%d", time.gmtime(ns / 1e9))
        return f"{self.cfg.prefix}{day}/{path.name}"

    # -- batches ---------------------------------------------------------------
    def _rotate_locked(self) -> None:
        self._writer.close()
        self._seal_locked()
        self._writer = JsonlSink(self.spool / _CURRENT, fsync=self.cfg.fsync)
        self._count = 0
        self._opened = time.monotonic()

    def _seal_locked(self) -> None:
        cur = self.spool / _CURRENT
        if cur.exists() and cur.stat().st_size > 0:
            sealed = self.spool / f"batch-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
            os.replace(cur, sealed)
            if self.cfg.fsync:
                _fsync_dir(self.spool)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_s3_client(cfg: S3SinkConfig) -> Any:
    kwargs: dict[str, Any] = {
        "config": Config(
            region_name=cfg.region,
            retries={"mode": "standard", "total_max_attempts": cfg.max_attempts},
            connect_timeout=cfg.connect_timeout_s,
            read_timeout=cfg.read_timeout_s,
        )
    }
    if cfg.endpoint_url:
        kwargs["endpoint_url"] = cfg.endpoint_url
    if cfg.dummy_credentials:
        kwargs.update(aws_access_key_id="testing", aws_secret_access_key="testing")
    return boto3.session.Session().client("s3", **kwargs)
