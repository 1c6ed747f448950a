"""A local Bedrock-compatible Converse server, for tests and the offline demo.

It speaks the wire format boto3 expects (restJson: `POST /model/{modelId}/converse`,
errors named by the `x-amzn-ErrorType` header, throttling as HTTP 429), so the real
boto3 client, its retries and its error parsing are exercised unchanged.
`POST /model/{modelId}/converse-stream` answers the same way as an
`application/vnd.amazon.eventstream` body (binary frames with CRC32s, one chunk each),
so botocore's own event-stream parser reads it; faults hit before the first frame. For a
prompt found in an outcomes file it answers as the recorded model did: the recorded
output length, truncated with `stopReason: max_tokens` past `maxTokens`. Whether that
answer passed is not in the text; a validator that knows the record looks it up
(`OutcomeIndex.passed`). It injects throttling, 5xx errors and latency at set rates,
and simulates per-model prompt caching from `cachePoint` blocks.

A result that carries the model's `answer` text is answered with that text (cut at
`maxTokens`), so a verifier in the client judges real answers. A record that carries a
`reference` answer (an extra field of the outcomes file) is
answered with that reference on its last line when the recorded model passed, and
with a wrong answer when it failed, so a grader reproduces the recorded verdict.

It also serves the control plane of Bedrock Batch Inference (create, get, list and
stop model invocation jobs, on the `bedrock` service's paths): a job reads its
Anthropic-messages records from S3 (any S3 endpoint, e.g. moto on loopback), answers
each as Converse would and writes `<output>/<job id>/<input name>.out` plus
`manifest.json.out`, in a background thread.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import hashlib
import json
import math
import random
import re
import struct
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from outcomes import ModelResult, OutcomeRecord
from router.ladder import Ladder, Tier
from router.tokens import estimate_tokens

_ERROR_NS = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
DEFAULT_OUTPUT_TOKENS = 200


def recorded_output_tokens(result: ModelResult) -> int:
    """A model's output length in tokens as the outcomes contract estimates it."""
    if result.output_tokens is not None:
        return max(1, math.ceil(result.output_tokens))
    if result.output_chars is not None:
        return max(1, estimate_tokens(int(result.output_chars)))
    return DEFAULT_OUTPUT_TOKENS


class OutcomeIndex:
    """Outcome records by prompt text, and each ladder model's recorded pass/fail."""

    def __init__(self, records: Iterable[OutcomeRecord], ladder: Ladder) -> None:
        self.ladder = ladder
        self.by_prompt: dict[str, OutcomeRecord] = {}
        for r in records:
            self.by_prompt.setdefault(r.prompt, r)
        self.tier_by_model: dict[str, Tier] = {t.model_id: t for t in ladder.tiers}
        if ladder.second_opinion is not None:
            self.tier_by_model.setdefault(ladder.second_opinion.model_id, ladder.second_opinion)

    def __len__(self) -> int:
        return len(self.by_prompt)

    def result(self, prompt: str, model_id: str) -> ModelResult | None:
        rec = self.by_prompt.get(prompt)
        tier = self.tier_by_model.get(model_id)
        if rec is None or tier is None:
            return None
        return rec.results.get(tier.outcomes_key)

    def passed(self, prompt: str, model_id: str) -> bool | None:
        """The recorded verdict for this model on this prompt; None if unknown."""
        r = self.result(prompt, model_id)
        return None if r is None else r.passed


@dataclass(frozen=True)
class FaultConfig:
    """Injected faults, each drawn per request from one seeded generator."""

    throttle_rate: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "error_rate"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if not isinstance(self.latency_ms, int | float) or not 0 <= self.latency_ms <= 60_000:
            raise ValueError(f"latency_ms must be in [0, 60000], got {self.latency_ms!r}")


@dataclass(frozen=True)
class Reply:
    """A scripted answer (tests use these to produce any stop reason or text); `content`
    adds blocks after the text, e.g. `{"toolUse": {...}}` for a tool call."""

    text: str
    stop_reason: str = "end_turn"
    output_tokens: int | None = None
    content: tuple[Mapping[str, Any], ...] = ()

    def blocks(self) -> list[dict[str, Any]]:
        head = [{"text": self.text}] if self.text or not self.content else []
        return head + [dict(b) for b in self.content]


@dataclass(frozen=True)
class ErrorReply:
    """A scripted Bedrock error."""

    status: int
    code: str
    message: str = "scripted error"


Responder = Callable[[str, Mapping[str, Any]], Reply | ErrorReply | None]


class BedrockError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Segments:
    """The request's text blocks in order: `text` (with roles, for cache keys) and, per
    block end and per cachePoint, (offset in `text`, content characters so far)."""

    text: str
    chars: int = 0
    boundaries: list[tuple[int, int]] = field(default_factory=list)
    cache_points: list[tuple[int, int]] = field(default_factory=list)


class LocalBedrock:
    """The server. `start()` runs it in a daemon thread on a free port (`port=0`)."""

    def __init__(
        self,
        ladder: Ladder,
        index: OutcomeIndex | None = None,
        faults: FaultConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        responder: Responder | None = None,
        s3_endpoint_url: str | None = None,
        batch_start_delay_s: float = 0.0,
    ) -> None:
        self.ladder = ladder
        self.index = index or OutcomeIndex((), ladder)
        self.faults = faults or FaultConfig()
        self.responder = responder
        self.unavailable_models: set[str] = set()
        # Fault storms: model id -> monotonic time its outage ends; model id -> added latency.
        self.outages: dict[str, float] = {}
        self.model_latency_ms: dict[str, float] = {}
        self.stats: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []  # (model_id, body) of answered calls, for tests
        self.keep_requests = False
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._cache: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self.batch = BatchJobs(self, s3_endpoint_url, batch_start_delay_s)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{self.port}"

    def start(self) -> LocalBedrock:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        """Release the socket after `serve_forever` returned (the CLI path)."""
        self._server.server_close()

    def stop(self) -> None:
        """Stop a server started with `start()`."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalBedrock:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the service
    def converse(self, model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Handle one Converse call; raises BedrockError for an error response."""
        with self._lock:
            self.stats["requests"] += 1
            u_throttle, u_error, u_kind = self._rng.random(), self._rng.random(), self._rng.random()
        delay_ms = self.faults.latency_ms + self.model_latency_ms.get(model_id, 0.0)
        if delay_ms:
            time.sleep(delay_ms / 1000)
        if model_id in self.unavailable_models or self._in_outage(model_id):
            self._count("unavailable")
            raise BedrockError(503, "ServiceUnavailableException", "Service unavailable.")
        if u_throttle < self.faults.throttle_rate:
            self._count("throttled")
            raise BedrockError(
                429, "ThrottlingException", "Too many requests, please wait before trying again."
            )
        if u_error < self.faults.error_rate:
            self._count("server_errors")
            if u_kind < 0.5:
                raise BedrockError(503, "ServiceUnavailableException", "Service unavailable.")
            raise BedrockError(500, "InternalServerException", "Internal server error.")
        return self.answer(model_id, body)

    def outage(self, model_id: str, seconds: float) -> None:
        """Answer 503 for `model_id` for the next `seconds` (a tier going down, then back)."""
        with self._lock:
            self.outages[model_id] = time.monotonic() + seconds

    def _in_outage(self, model_id: str) -> bool:
        until = self.outages.get(model_id)
        return until is not None and time.monotonic() < until

    def answer(self, model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A Converse response for `body`, without fault injection (batch jobs use it)."""
        tier = self.ladder.tiers[0]
        known = self.index.tier_by_model.get(model_id)
        if known is None and self.responder is None:
            raise BedrockError(
                400, "ValidationException", "The provided model identifier is invalid."
            )
        tier = known or tier
        max_tokens, segs, last_user = _parse_request(body)
        reply = self.responder(model_id, body) if self.responder is not None else None
        if isinstance(reply, ErrorReply):
            self._count("scripted_errors")
            raise BedrockError(reply.status, reply.code, reply.message)
        if reply is None:
            if known is None:
                raise BedrockError(
                    400, "ValidationException", "The provided model identifier is invalid."
                )
            reply = self._recorded_reply(last_user, tier, max_tokens)
        usage = self._usage(model_id, segs, reply)
        if self.keep_requests:
            with self._lock:
                self.requests.append({"modelId": model_id, "body": dict(body)})
        self._count("answered")
        return {
            "output": {"message": {"role": "assistant", "content": reply.blocks()}},
            "stopReason": reply.stop_reason,
            "usage": usage,
            "metrics": {"latencyMs": int(self.faults.latency_ms) + 1},
        }

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _recorded_reply(self, prompt: str, tier: Tier, max_tokens: int) -> Reply:
        result = self.index.result(prompt, tier.model_id)
        seed = f"{tier.model_id}\n{prompt}"
        if result is None:
            n = min(120, max_tokens)
            return Reply(_filler(seed, n * 4, "Here is a short answer."), "end_turn", n)
        n = recorded_output_tokens(result)
        recorded = result.extra.get("answer")
        if isinstance(recorded, str) and recorded.strip():
            # The model's real answer, so a verifier judges what the model really wrote.
            if n > max_tokens:
                return Reply(recorded[: max_tokens * 4], "max_tokens", max_tokens)
            return Reply(recorded, "end_turn", n)
        if n > max_tokens:
            return Reply(
                _filler(seed, max_tokens * 4, "Working through it."), "max_tokens", max_tokens
            )
        chars = int(result.output_chars) if result.output_chars is not None else n * 4
        rec = self.index.by_prompt.get(prompt)
        if rec is not None and "reference" in rec.extra:
            ref = rec.extra["reference"]
            final = "\nAnswer: " + (_answer_text(ref) if result.passed else wrong_answer(ref))
            body = _filler(seed, max(chars - len(final), 1), "Working through it.")
            return Reply(body + final, "end_turn", n)
        return Reply(_filler(seed, max(chars, 1), "Working through it."), "end_turn", n)

    def _usage(self, model_id: str, segs: _Segments, reply: Reply) -> dict[str, int]:
        """Bedrock-style usage: cached prefix tokens are reported apart from inputTokens.

        The cache is per model: the longest earlier-cached block prefix is read, the rest
        up to the last cachePoint is written."""
        total = estimate_tokens(segs.chars)
        out = reply.output_tokens
        if out is None:
            out = estimate_tokens(len(reply.text))
        usage = {"inputTokens": total, "outputTokens": out}
        if segs.cache_points:
            point, point_chars = segs.cache_points[-1]
            hit_chars = 0
            with self._lock:
                for offset, chars in segs.boundaries:
                    if offset <= point and (model_id, _h(segs.text[:offset])) in self._cache:
                        hit_chars = max(hit_chars, chars)
                self._cache.add((model_id, _h(segs.text[:point])))
            read = estimate_tokens(hit_chars)
            write = estimate_tokens(point_chars) - read
            usage["inputTokens"] = total - estimate_tokens(point_chars)
            usage["cacheReadInputTokens"] = read
            usage["cacheWriteInputTokens"] = write
        usage["totalTokens"] = sum(usage.values())
        return usage


def _answer_text(ref: Any) -> str:
    return ref if isinstance(ref, str) else json.dumps(ref)


def wrong_answer(ref: Any) -> str:
    """A deterministic answer that differs from `ref` in the way a grader checks it:
    another option letter, another number, broken JSON, or an unrelated phrase."""
    text = _answer_text(ref).strip()
    if re.fullmatch(r"[A-Za-z]", text):
        letters = "ABCDEFGHIJ" if text.upper() in "ABCDEFGHIJ" else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        return letters[(letters.index(text.upper()) + 1) % len(letters)]
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return f"{value + 1:g}"
    if text[:1] in "{[":
        return text[: max(1, len(text) // 2)]
    return "none of these"


def _h(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


_WORDS = [
    "the",
    "answer",
    "follows",
    "from",
    "the",
    "given",
    "values",
    "so",
    "we",
    "compute",
    "each",
    "step",
    "and",
    "compare",
    "options",
    "carefully",
    "then",
    "check",
    "units",
    "and",
    "state",
    "the",
    "result",
    "clearly",
    "with",
    "reasoning",
]


def _filler(seed: str, chars: int, lead: str) -> str:
    rng = random.Random(_h(seed))
    parts = [lead]
    size = len(lead)
    while size < chars:
        w = rng.choice(_WORDS)
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts)[: max(chars, 1)]


def _parse_request(body: Mapping[str, Any]) -> tuple[int, _Segments, str]:
    """Validate a Converse body as Bedrock does (enough of it) and flatten its text."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BedrockError(400, "ValidationException", "messages must contain at least one message")
    inference = body.get("inferenceConfig") or {}
    if not isinstance(inference, dict):
        raise BedrockError(400, "ValidationException", "inferenceConfig must be an object")
    max_tokens = inference.get("maxTokens", 4096)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BedrockError(400, "ValidationException", "inferenceConfig.maxTokens must be >= 1")
    extra = body.get("additionalModelRequestFields")
    if extra is not None:
        if not isinstance(extra, dict):
            raise BedrockError(
                400, "ValidationException", "additionalModelRequestFields must be an object"
            )
        thinking = extra.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or not 1024 <= budget < max_tokens:
                raise BedrockError(
                    400,
                    "ValidationException",
                    "thinking.budget_tokens must be >= 1024 and less than max_tokens",
                )
    tool_blocks = any(
        isinstance(b, dict) and ("toolUse" in b or "toolResult" in b)
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for b in m["content"]
    )
    if tool_blocks and not isinstance(body.get("toolConfig"), dict):
        raise BedrockError(
            400,
            "ValidationException",
            "The toolConfig field must be defined when using toolUse and toolResult content "
            "blocks.",
        )
    segs = _Segments("")
    pieces: list[str] = []
    offset = 0

    def add_blocks(blocks: Any, prefix: str) -> None:
        nonlocal offset
        if not isinstance(blocks, list):
            raise BedrockError(400, "ValidationException", "content must be a list of blocks")
        for b in blocks:
            if not isinstance(b, dict):
                raise BedrockError(400, "ValidationException", "a content block must be an object")
            if "cachePoint" in b:
                segs.cache_points.append((offset, segs.chars))
            elif isinstance(b.get("text"), str):
                piece = prefix + b["text"] + "\n"
                pieces.append(piece)
                offset += len(piece)
                segs.chars += len(b["text"])
                segs.boundaries.append((offset, segs.chars))

    add_blocks(body.get("system") or [], "system: ")
    last_user = ""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise BedrockError(
                400, "ValidationException", f"messages.{i}.role must be user or assistant"
            )
        if i == 0 and m["role"] != "user":
            raise BedrockError(
                400, "ValidationException", "A conversation must start with a user message."
            )
        add_blocks(m.get("content"), f"{m['role']}: ")
        if m["role"] == "user":
            last_user = "\n".join(
                b["text"]
                for b in m["content"]
                if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
    segs.text = "".join(pieces)
    return max_tokens, segs, last_user


# ---------------------------------------------------------------- event stream
def _header(name: str, value: str) -> bytes:
    n, v = name.encode("utf-8"), value.encode("utf-8")
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v


def event_frame(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """One `application/vnd.amazon.eventstream` message: prelude (total and headers
    length, CRC32 of both), string headers, the JSON payload, CRC32 of all before it."""
    headers = (
        _header(":event-type", event_type)
        + _header(":content-type", "application/json")
        + _header(":message-type", "event")
    )
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    head = prelude + struct.pack(">I", binascii.crc32(prelude)) + headers + body
    return head + struct.pack(">I", binascii.crc32(head))


def _text_pieces(text: str, size: int = 24) -> list[str]:
    """A text cut at word ends into deltas of about `size` characters."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        while end < len(text) and not text[end - 1].isspace():
            end += 1
        out.append(text[start:end])
        start = end
    return out


def stream_events(resp: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A Converse response as ConverseStream's events, in Bedrock's order."""
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    for i, block in enumerate(resp["output"]["message"]["content"]):
        if "toolUse" in block:
            tool = block["toolUse"]
            start = {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}
            events.append(("contentBlockStart", {"contentBlockIndex": i, "start": start}))
            delta = {"toolUse": {"input": json.dumps(tool.get("input", {}))}}
            events.append(("contentBlockDelta", {"contentBlockIndex": i, "delta": delta}))
        else:
            for piece in _text_pieces(str(block.get("text", ""))):
                events.append(
                    ("contentBlockDelta", {"contentBlockIndex": i, "delta": {"text": piece}})
                )
        events.append(("contentBlockStop", {"contentBlockIndex": i}))
    events.append(("messageStop", {"stopReason": resp["stopReason"]}))
    events.append(("metadata", {"usage": resp["usage"], "metrics": resp["metrics"]}))
    return events


# ---------------------------------------------------------------- batch inference
ACCOUNT_ID = "123456789012"
TERMINAL_JOB_STATUSES = frozenset(
    {"Completed", "Failed", "Stopped", "PartiallyCompleted", "Expired"}
)
_JOB_NAME = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_S3_URI = re.compile(r"s3://([a-z0-9][-.a-z0-9]{1,61}[a-z0-9])(?:/(.*))?")
_JOB_ID = re.compile(
    r"(?:arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?([a-z0-9]{12})"
)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key or prefix) of an `s3://` URI; raises BedrockError if malformed."""
    m = _S3_URI.fullmatch(uri) if isinstance(uri, str) else None
    if m is None:
        raise BedrockError(400, "ValidationException", f"invalid S3 URI: {uri!r}")
    return m.group(1), m.group(2) or ""


@dataclass
class BatchJob:
    """One model invocation job as the control plane reports it."""

    job_id: str
    name: str
    model_id: str
    role_arn: str
    token: str | None
    input_uri: str
    output_uri: str
    submit_time: float
    status: str = "Submitted"
    message: str | None = None
    last_modified: float = 0.0
    end_time: float | None = None
    total: int = 0
    processed: int = 0
    success: int = 0
    errors: int = 0
    stop_requested: bool = False

    @property
    def arn(self) -> str:
        return f"arn:aws:bedrock:us-east-1:{ACCOUNT_ID}:model-invocation-job/{self.job_id}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "jobArn": self.arn,
            "jobName": self.name,
            "modelId": self.model_id,
            "roleArn": self.role_arn,
            "status": self.status,
            "submitTime": _iso(self.submit_time),
            "lastModifiedTime": _iso(self.last_modified or self.submit_time),
            "inputDataConfig": {
                "s3InputDataConfig": {"s3Uri": self.input_uri, "s3InputFormat": "JSONL"}
            },
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": self.output_uri}},
            "timeoutDurationInHours": 24,
            "jobExpirationTime": _iso(self.submit_time + 24 * 3600),
            "modelInvocationType": "InvokeModel",
            "totalRecordCount": self.total,
            "processedRecordCount": self.processed,
            "successRecordCount": self.success,
            "errorRecordCount": self.errors,
        }
        if self.token:
            d["clientRequestToken"] = self.token
        if self.message:
            d["message"] = self.message
        if self.end_time is not None:
            d["endTime"] = _iso(self.end_time)
        return d


def anthropic_to_converse(model_input: Any) -> dict[str, Any]:
    """An Anthropic messages body (the batch record format for Claude) as a Converse body."""
    if not isinstance(model_input, dict):
        raise BedrockError(400, "ValidationException", "modelInput must be a JSON object")
    if not isinstance(model_input.get("anthropic_version"), str):
        raise BedrockError(400, "ValidationException", "anthropic_version is required")
    max_tokens = model_input.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BedrockError(400, "ValidationException", "max_tokens: a positive integer is required")

    def blocks(content: Any) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"text": content}]
        if not isinstance(content, list):
            raise BedrockError(400, "ValidationException", "content must be a string or list")
        out = []
        for b in content:
            if (
                not isinstance(b, dict)
                or b.get("type") != "text"
                or not isinstance(b.get("text"), str)
            ):
                raise BedrockError(
                    400, "ValidationException", "only text content blocks are supported"
                )
            out.append({"text": b["text"]})
        return out

    messages = model_input.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BedrockError(400, "ValidationException", "messages: at least one message is required")
    conv: dict[str, Any] = {
        "messages": [
            {
                "role": m.get("role") if isinstance(m, dict) else None,
                "content": blocks(m.get("content") if isinstance(m, dict) else None),
            }
            for m in messages
        ],
        "inferenceConfig": {"maxTokens": max_tokens},
    }
    if model_input.get("system") is not None:
        conv["system"] = blocks(model_input["system"])
    return conv


def converse_to_anthropic(resp: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    """A Converse response as the Anthropic messages response body batch output carries."""
    usage = resp.get("usage", {})
    text = "".join(b.get("text", "") for b in resp["output"]["message"]["content"])
    return {
        "id": "msg_bdrk_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model_id.split(".")[-1].rsplit("-v", 1)[0],
        "content": [{"type": "text", "text": text}],
        "stop_reason": resp.get("stopReason", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("inputTokens", 0)),
            "output_tokens": int(usage.get("outputTokens", 0)),
        },
    }


class BatchJobs:
    """Model invocation jobs: validated on create, run one at a time by a worker thread.

    A job waits `start_delay_s` in Submitted (tests use it to interrupt a labeling run
    while its jobs are pending), then reads every `.jsonl` object at its input URI."""

    def __init__(
        self, service: LocalBedrock, s3_endpoint_url: str | None, start_delay_s: float = 0.0
    ) -> None:
        self.service = service
        self.s3_endpoint_url = s3_endpoint_url
        self.start_delay_s = start_delay_s
        self.jobs: dict[str, BatchJob] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[str] = []
        self._worker: threading.Thread | None = None

    # ---- control plane
    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        for k in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if k not in body:
                raise BedrockError(400, "ValidationException", f"{k} is required")
        name, role, model_id = body["jobName"], body["roleArn"], body["modelId"]
        if not isinstance(name, str) or not _JOB_NAME.fullmatch(name) or len(name) > 63:
            raise BedrockError(400, "ValidationException", f"invalid jobName {name!r}")
        if not isinstance(role, str) or not _ROLE_ARN.fullmatch(role):
            raise BedrockError(400, "ValidationException", f"invalid roleArn {role!r}")
        if model_id not in self.service.index.tier_by_model:
            raise BedrockError(400, "ValidationException", f"model {model_id!r} is not supported")
        try:
            in_uri = body["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
            out_uri = body["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        except (KeyError, TypeError):
            raise BedrockError(
                400, "ValidationException", "S3 input/output config is required"
            ) from None
        split_s3_uri(in_uri)
        split_s3_uri(out_uri)
        token = body.get("clientRequestToken")
        with self._lock:
            for job in self.jobs.values():
                if token and job.token == token:
                    return {"jobArn": job.arn}  # an idempotent retry of the same create
                if job.name == name:
                    raise BedrockError(400, "ConflictException", f"a job named {name!r} exists")
            job = BatchJob(
                job_id=uuid.uuid4().hex[:12],
                name=name,
                model_id=model_id,
                role_arn=role,
                token=token,
                input_uri=in_uri,
                output_uri=out_uri,
                submit_time=time.time(),
            )
            self.jobs[job.job_id] = job
            self._pending.append(job.job_id)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True)
                self._worker.start()
            self._wake.notify_all()
        return {"jobArn": job.arn}

    def _find(self, ident: str) -> BatchJob:
        m = _JOB_ID.fullmatch(ident)
        job = self.jobs.get(m.group(1)) if m else None
        if job is None:
            raise BedrockError(404, "ResourceNotFoundException", f"job {ident!r} not found")
        return job

    def get(self, ident: str) -> dict[str, Any]:
        with self._lock:
            return self._find(ident).to_dict()

    def stop(self, ident: str) -> dict[str, Any]:
        with self._lock:
            job = self._find(ident)
            if job.status in TERMINAL_JOB_STATUSES:
                raise BedrockError(400, "ConflictException", f"job is already {job.status}")
            job.stop_requested = True
            job.status = "Stopping"
            job.last_modified = time.time()
        return {}

    def list(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        def one(k: str) -> str | None:
            v = query.get(k)
            return v[0] if v else None

        name, status = one("nameContains"), one("statusEquals")
        try:
            max_results = int(one("maxResults") or 1000)
            start = int(one("nextToken") or 0)
        except ValueError:
            raise BedrockError(400, "ValidationException", "bad maxResults or nextToken") from None
        with self._lock:
            jobs = [
                j
                for j in self.jobs.values()
                if (name is None or name in j.name) and (status is None or j.status == status)
            ]
            jobs.sort(key=lambda j: j.submit_time, reverse=one("sortOrder") != "Ascending")
            page = [j.to_dict() for j in jobs[start : start + max_results]]
        out: dict[str, Any] = {"invocationJobSummaries": page}
        if start + max_results < len(jobs):
            out["nextToken"] = str(start + max_results)
        return out

    # ---- the worker
    def _set(self, job: BatchJob, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(job, k, v)
            job.last_modified = time.time()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._wake.wait()
                job = self.jobs[self._pending.pop(0)]
            wait_until = job.submit_time + self.start_delay_s
            while time.time() < wait_until and not job.stop_requested:
                time.sleep(min(0.05, max(0.0, wait_until - time.time())))
            try:
                self._run(job)
            except BedrockError as e:
                self._set(job, status="Failed", message=e.message, end_time=time.time())
            except Exception as e:  # keep the worker alive; the job reports the failure
                self._set(
                    job, status="Failed", message=f"{type(e).__name__}: {e}", end_time=time.time()
                )

    def _s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def _run(self, job: BatchJob) -> None:
        if job.stop_requested:
            self._set(job, status="Stopped", end_time=time.time())
            return
        if not self.s3_endpoint_url:
            raise BedrockError(400, "ValidationException", "this local server has no S3 endpoint")
        self._set(job, status="Validating")
        s3 = self._s3()
        bucket, key = split_s3_uri(job.input_uri)
        if key.endswith(".jsonl"):
            inputs, prefix = [key], key[: key.rfind("/") + 1]
        else:
            prefix = key if not key or key.endswith("/") else key + "/"
            inputs = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                inputs += [
                    o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl")
                ]
        if not inputs:
            raise BedrockError(400, "ValidationException", f"no .jsonl input at {job.input_uri}")
        out_bucket, out_prefix = split_s3_uri(job.output_uri)
        out_base = f"{out_prefix.rstrip('/')}/{job.job_id}/".lstrip("/")
        self._set(job, status="Scheduled")
        self._set(job, status="InProgress")
        in_tokens = out_tokens = 0
        for in_key in inputs:
            rel = in_key[len(prefix) :]
            with tempfile.TemporaryFile("w+b") as out:
                body = s3.get_object(Bucket=bucket, Key=in_key)["Body"]
                for line in body.iter_lines():
                    if job.stop_requested:
                        break
                    if not line.strip():
                        continue
                    rec = self._record(job.model_id, line)
                    if "modelOutput" in rec:
                        u = rec["modelOutput"]["usage"]
                        in_tokens += u["input_tokens"]
                        out_tokens += u["output_tokens"]
                    out.write(json.dumps(rec).encode("utf-8") + b"\n")
                    with self._lock:
                        job.total += 1
                        job.processed += 1
                        job.success += "modelOutput" in rec
                        job.errors += "error" in rec
                out.seek(0)
                s3.upload_fileobj(out, out_bucket, out_base + rel + ".out")
            if job.stop_requested:
                break
        manifest = {
            "totalRecordCount": job.total,
            "processedRecordCount": job.processed,
            "successRecordCount": job.success,
            "errorRecordCount": job.errors,
            "inputTokenCount": in_tokens,
            "outputTokenCount": out_tokens,
        }
        s3.put_object(
            Bucket=out_bucket,
            Key=out_base + "manifest.json.out",
            Body=json.dumps(manifest).encode("utf-8"),
        )
        self._set(
            job, status="Stopped" if job.stop_requested else "Completed", end_time=time.time()
        )

    def _record(self, model_id: str, line: bytes) -> dict[str, Any]:
        """One output line: the input record with `modelOutput`, or `error` in its place."""
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("a record must be a JSON object")
        except ValueError as e:
            return {
                "recordId": uuid.uuid4().hex[:11].upper(),
                "error": {"errorCode": 400, "errorMessage": f"malformed record: {e}"},
            }
        out: dict[str, Any] = {
            "recordId": rec.get("recordId") or uuid.uuid4().hex[:11].upper(),
            "modelInput": rec.get("modelInput"),
        }
        with self.service._lock:
            self.service.stats["batch_records"] += 1
            failed = self.service._rng.random() < self.service.faults.error_rate
        try:
            if failed:
                raise BedrockError(500, "InternalServerException", "Internal server error.")
            resp = self.service.answer(model_id, anthropic_to_converse(rec.get("modelInput")))
            out["modelOutput"] = converse_to_anthropic(resp, model_id)
        except BedrockError as e:
            out["error"] = {"errorCode": e.status, "errorMessage": e.message}
        return out


def _make_handler(service: LocalBedrock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "local-bedrock/1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = self.path.split("?", 1)[0].split("/")
            if len(parts) >= 2 and parts[1] == "model-invocation-job":
                self._control_post(parts, raw)
                return
            stream = len(parts) == 4 and parts[3] == "converse-stream"
            ops = ("converse", "converse-stream")
            if len(parts) != 4 or parts[1] != "model" or parts[3] not in ops:
                self._error(404, "UnknownOperationException", f"no operation at {self.path}")
                return
            model_id = unquote(parts[2])
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
            except ValueError as e:
                self._error(400, "ValidationException", f"malformed request body: {e}")
                return
            try:
                resp = service.converse(model_id, body)
            except BedrockError as e:
                self._error(e.status, e.code, e.message)
                return
            except Exception as e:  # a bug here must look like a 500, not a hang
                self._error(500, "InternalServerException", f"{type(e).__name__}: {e}")
                return
            if stream:
                self._send_stream(resp)
                return
            self._send(200, resp, {})

        def _send_stream(self, resp: Mapping[str, Any]) -> None:
            """The answer as event-stream frames, one HTTP chunk each, flushed as it goes."""
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.end_headers()
            for event_type, payload in stream_events(resp):
                frame = event_frame(event_type, payload)
                self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def do_GET(self) -> None:
            path, _, qs = self.path.partition("?")
            parts = path.split("/")
            try:
                if len(parts) == 3 and parts[1] == "model-invocation-job":
                    resp = service.batch.get(unquote(parts[2]))
                elif len(parts) == 2 and parts[1] == "model-invocation-jobs":
                    resp = service.batch.list(parse_qs(qs))
                else:
                    self._error(404, "UnknownOperationException", f"no operation at {self.path}")
                    return
            except BedrockError as e:
                self._error(e.status, e.code, e.message)
                return
            self._send(200, resp, {})

        def _control_post(self, parts: list[str], raw: bytes) -> None:
            try:
                if len(parts) == 2:
                    body = json.loads(raw or b"{}")
                    if not isinstance(body, dict):
                        raise BedrockError(400, "ValidationException", "body must be an object")
                    resp = service.batch.create(body)
                elif len(parts) == 4 and parts[3] == "stop":
                    resp = service.batch.stop(unquote(parts[2]))
                else:
                    raise BedrockError(
                        404, "UnknownOperationException", f"no operation at {self.path}"
                    )
            except ValueError as e:
                self._error(400, "ValidationException", f"malformed request body: {e}")
                return
            except BedrockError as e:
                self._error(e.status, e.code, e.message)
                return
            self._send(200, resp, {})

        def _error(self, status: int, code: str, message: str) -> None:
            self._send(status, {"message": message}, {"x-amzn-ErrorType": code + _ERROR_NS})

        def _send(self, status: int, doc: Mapping[str, Any], headers: Mapping[str, str]) -> None:
            data = json.dumps(doc).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    return Handler
