"""Bedrock Batch Inference plumbing shared by labeling and routed batch serving: record
ids, the Anthropic messages body of a record, job names, job statuses, and the S3 side
(input parts up, output records down).

A Batch input file holds one `{"recordId", "modelInput"}` object per line; a job writes
`<output>/<job id>/<input name>.out` with `modelOutput` or `error` per record.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from boto3.s3.transfer import TransferConfig

from router.ladder import Tier

ANTHROPIC_VERSION = "bedrock-2023-05-31"
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped", "PartiallyCompleted", "Expired"})
# Ended with output worth reading (records not in it are retried or reported by the caller).
USABLE_STATUSES = frozenset({"Completed", "PartiallyCompleted", "Stopped", "Expired"})
MAX_RECORDS_PER_JOB = 50_000  # Bedrock's per-file and per-job record quota
# Multipart uploads buffer chunk_size x concurrency bytes; keep that small and fixed.
TRANSFER = TransferConfig(
    multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20, max_concurrency=2
)


def record_id(rid: int) -> str:
    """Bedrock wants an alphanumeric recordId; caller ids may hold '/' and more."""
    return f"R{rid:010d}"


def rid_of(record_id_: str) -> int | None:
    if len(record_id_) == 11 and record_id_[0] == "R" and record_id_[1:].isdigit():
        return int(record_id_[1:])
    return None


def job_name(*parts: str) -> str:
    """A valid job name (letters, digits, '-'; at most 63 characters) from its parts."""
    name = re.sub(r"[^a-zA-Z0-9-]", "-", "-".join(parts))
    return name[:63].rstrip("-")


def messages_body(
    messages: Sequence[Mapping[str, Any]],
    tier: Tier,
    system: str | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """A record's `modelInput` for a Claude model: the Anthropic messages body, from
    Converse-shaped messages (text blocks) and the tier's inference settings."""
    body: dict[str, Any] = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": min(max_tokens, tier.max_tokens) if max_tokens else tier.max_tokens,
        "messages": [
            {
                "role": m["role"],
                "content": [{"type": "text", "text": b["text"]} for b in m["content"]],
            }
            for m in messages
        ],
    }
    if system:
        body["system"] = system
    if tier.temperature is not None:
        body["temperature"] = tier.temperature
    if tier.top_p is not None:
        body["top_p"] = tier.top_p
    return body


def is_nova(model_id: str) -> bool:
    """Amazon Nova models (their batch records use Nova's `messages-v1` schema)."""
    return "amazon.nova" in model_id


def nova_body(
    messages: Sequence[Mapping[str, Any]],
    tier: Tier,
    system: str | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """A record's `modelInput` for an Amazon Nova model: its `messages-v1` invoke body."""
    cfg: dict[str, Any] = {
        "maxTokens": min(max_tokens, tier.max_tokens) if max_tokens else tier.max_tokens
    }
    if tier.temperature is not None:
        cfg["temperature"] = tier.temperature
    if tier.top_p is not None:
        cfg["topP"] = tier.top_p
    body: dict[str, Any] = {
        "schemaVersion": "messages-v1",
        "messages": [
            {"role": m["role"], "content": [{"text": b["text"]} for b in m["content"]]}
            for m in messages
        ],
        "inferenceConfig": cfg,
    }
    if system:
        body["system"] = [{"text": system}]
    return body


def model_input(
    messages: Sequence[Mapping[str, Any]],
    tier: Tier,
    system: str | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The `modelInput` of a batch record in the tier's model family's own format."""
    build = nova_body if is_nova(tier.model_id) else messages_body
    return build(messages, tier, system, max_tokens)


def answer_of(model_output: Any) -> tuple[str, str, int, int] | None:
    """(text, stop reason, input tokens, output tokens) of a record's `modelOutput`, in
    the Anthropic or the Nova response format; None when it holds no message."""
    if not isinstance(model_output, dict):
        return None
    if "output" in model_output:  # Nova
        message = (model_output.get("output") or {}).get("message") or {}
        content = message.get("content") or []
        stop = model_output.get("stopReason")
        usage = model_output.get("usage") or {}
        tokens = (usage.get("inputTokens", 0), usage.get("outputTokens", 0))
    else:
        content = model_output.get("content") or []
        stop = model_output.get("stop_reason")
        usage = model_output.get("usage") or {}
        tokens = (usage.get("input_tokens", 0), usage.get("output_tokens", 0))
    text = "\n".join(
        b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
    )
    return text, str(stop or ""), int(tokens[0] or 0), int(tokens[1] or 0)


def upload_jsonl(s3: Any, bucket: str, key: str, lines: Iterable[Mapping[str, Any]]) -> int:
    """Write `lines` to a temp file and upload it part by part (memory stays flat in the
    number of records); returns how many records it holds."""
    n = 0
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as fh:
        name = fh.name
        for line in lines:
            fh.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
            n += 1
    try:
        s3.upload_file(name, bucket, key, Config=TRANSFER)
    finally:
        os.unlink(name)
    return n


def output_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The `.jsonl.out` objects under a job's output prefix, in name order."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl.out")]
    return sorted(keys)


def output_records(s3: Any, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    """The records of one output object, streamed; a line that is not JSON raises
    ValueError naming the object and line."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for n, raw in enumerate(body.iter_lines(), 1):
        if raw.strip():
            try:
                rec = json.loads(raw)
            except ValueError:
                raise ValueError(f"s3://{bucket}/{key}:{n}: invalid JSON") from None
            if isinstance(rec, dict):
                yield rec


_BUCKET = re.compile(r"[a-z0-9][-.a-z0-9]{1,61}[a-z0-9]")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_S3_PREFIX = re.compile(r"[-!_*'().a-zA-Z0-9]+(/[-!_*'().a-zA-Z0-9]+)*")


def check_batch_location(bucket: str, role_arn: str, s3_prefix: str) -> None:
    """Where Batch jobs read and write, checked before anything is submitted (labeling's
    and routed batch's configs alike): ValueError naming what is wrong."""
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"invalid S3 bucket name {bucket!r}")
    if not _ROLE_ARN.fullmatch(role_arn):
        raise ValueError(
            f"role ARN must look like arn:aws:iam::ACCOUNT:role/NAME, got {role_arn!r}"
        )
    if not _S3_PREFIX.fullmatch(s3_prefix):
        raise ValueError(f"invalid S3 prefix {s3_prefix!r}")
