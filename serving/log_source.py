"""Where outcome logs are read from: local files and S3 prefixes, as streams of lines.

Every reader of outcome logs (feedback, retrain, monitor, the scale table) goes through
`iter_log_lines`, which holds one block of one source in memory at a time, whatever the
log's size: local files are read block by block, `s3://bucket/prefix` lists its objects
page by page (a boto3 paginator) and reads each object's streaming body in blocks, and
gzip (by magic bytes) is decompressed on the fly. A gzipped source cut short keeps every
line before the damage; a line longer than `MAX_LINE_BYTES` is skipped as unreadable
rather than buffered.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BLOCK_BYTES = 1 << 16
MAX_LINE_BYTES = 64 << 20  # a record is a few kB; a line this long is damage, not data
_S3_URI = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?")


class LogSourceError(ValueError):
    """A log location that cannot be read (bad URI, missing file, empty prefix)."""


@dataclass(frozen=True)
class Source:
    """One readable log: a local path or one S3 object."""

    name: str  # shown in messages and stats: the path or s3://bucket/key
    path: Path | None = None
    bucket: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Line:
    """One raw line (without its newline) and whether it is the last of its source."""

    source: str
    data: bytes
    last: bool


def is_s3(location: str | Path) -> bool:
    return str(location).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; raises LogSourceError when malformed."""
    m = _S3_URI.fullmatch(uri)
    if m is None:
        raise LogSourceError(f"not an s3://bucket/prefix URI: {uri!r}")
    return m.group(1), m.group(2) or ""


def s3_client() -> Any:
    """boto3's S3 client from the environment (credentials chain, AWS_REGION,
    AWS_ENDPOINT_URL_S3 for an S3 lookalike such as moto)."""
    import boto3

    return boto3.session.Session().client("s3")


def expand(
    locations: str | Path | Iterable[str | Path], s3: Any | None = None, page_size: int = 1000
) -> Iterator[Source]:
    """Each location as its sources: a file as itself, an S3 prefix as its objects in key
    order (listed one page at a time, so a prefix of a million objects costs one page)."""
    items = [locations] if isinstance(locations, str | Path) else locations
    for loc in items:
        if not is_s3(loc):
            yield Source(str(loc), path=Path(loc))
            continue
        bucket, prefix = split_s3(str(loc))
        client = s3 if s3 is not None else s3_client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        found = False
        with _s3_errors(str(loc)):
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):
                        continue  # a folder marker
                    found = True
                    yield Source(f"s3://{bucket}/{obj['Key']}", bucket=bucket, key=obj["Key"])
        if not found:
            raise LogSourceError(f"{loc}: no objects under this prefix")


@contextlib.contextmanager
def _s3_errors(where: str) -> Iterator[None]:
    """S3 failures (no such bucket, access denied, no credentials, unreachable) as one
    LogSourceError naming the location, not a botocore traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as e:
        raise LogSourceError(f"{where}: cannot read from S3: {e}") from None


def open_source(src: Source, s3: Any | None = None) -> IO[bytes]:
    """A binary stream of the source's (decompressed) bytes."""
    buffered: io.BufferedReader
    if src.path is not None:
        buffered = src.path.open("rb")
    else:
        client = s3 if s3 is not None else s3_client()
        with _s3_errors(src.name):
            body = client.get_object(Bucket=src.bucket, Key=src.key)["Body"]
        buffered = io.BufferedReader(body, BLOCK_BYTES)  # botocore's body has readinto
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    return buffered


def iter_source_lines(src: Source, s3: Any | None = None) -> Iterator[Line | str]:
    """The source's lines, block by block; a str item says why reading stopped early."""
    with open_source(src, s3) as fh:
        read1 = getattr(fh, "read1", fh.read)
        tail = b""
        skipping = False  # inside a line longer than MAX_LINE_BYTES
        damage: str | None = None
        while True:
            try:
                block = read1(BLOCK_BYTES)
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
                damage = f"compressed data unreadable ({type(e).__name__}: {e})"
                break
            if not block:
                break
            parts = (tail + block).split(b"\n")
            tail = parts.pop()
            for part in parts:
                if skipping:
                    skipping = False
                    yield Line(src.name, b"\x00too long", last=False)
                    continue
                yield Line(src.name, part, last=False)
            if len(tail) > MAX_LINE_BYTES:
                tail, skipping = b"", True
        if skipping:
            yield Line(src.name, b"\x00too long", last=True)
        elif tail:
            yield Line(src.name, tail, last=True)
        if damage is not None:
            yield damage
