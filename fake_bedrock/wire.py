"""The Converse and ConverseStream wire, as boto3 expects it.

restJson: `POST /model/{modelId}/converse`, errors named by the `x-amzn-ErrorType` header,
throttling as HTTP 429, so the real boto3 client, its retries and its error parsing are
exercised unchanged. `POST /model/{modelId}/converse-stream` answers the same way as an
`application/vnd.amazon.eventstream` body (binary frames with CRC32s, one chunk each), so
botocore's own event-stream parser reads it; faults hit before the first frame. The batch
control plane's paths are routed to `service.batch`.
"""

from __future__ import annotations

import binascii
import json
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from fake_bedrock.errors import BedrockError

if TYPE_CHECKING:
    from fake_bedrock.server import LocalBedrock

_ERROR_NS = ":http://internal.amazon.com/coral/com.amazon.bedrock/"


@dataclass
class Segments:
    """The request's text blocks in order: `text` (with roles, for cache keys) and, per
    block end and per cachePoint, (offset in `text`, content characters so far)."""

    text: str
    chars: int = 0
    boundaries: list[tuple[int, int]] = field(default_factory=list)
    cache_points: list[tuple[int, int]] = field(default_factory=list)


def parse_request(body: Mapping[str, Any]) -> tuple[int, Segments, str]:
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
    segs = Segments("")
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


def _control_body(raw: bytes) -> Mapping[str, Any]:
    """A control-plane request body, which must be a JSON object."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError as e:
        raise BedrockError(400, "ValidationException", f"malformed request body: {e}") from None
    if not isinstance(body, dict):
        raise BedrockError(400, "ValidationException", "body must be an object")
    return body


def make_handler(service: LocalBedrock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "local-bedrock/1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default
            return

        def do_POST(self) -> None:
            header = self.headers.get("Content-Length") or "0"
            try:
                length = int(header)
            except ValueError:
                length = -1
            if length < 0:  # read(-1) would wait for EOF on a kept-alive connection
                self.close_connection = True
                self._error(400, "ValidationException", f"invalid Content-Length {header!r}")
                return
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

            def call() -> Mapping[str, Any]:
                if len(parts) == 3 and parts[1] == "model-invocation-job":
                    return service.batch.get(unquote(parts[2]))
                if len(parts) == 2 and parts[1] == "model-invocation-jobs":
                    return service.batch.list(parse_qs(qs))
                raise self._no_operation()

            self._control_reply(call)

        def _control_post(self, parts: list[str], raw: bytes) -> None:
            def call() -> Mapping[str, Any]:
                if len(parts) == 2:
                    return service.batch.create(_control_body(raw))
                if len(parts) == 4 and parts[3] == "stop":
                    return service.batch.stop(unquote(parts[2]))
                raise self._no_operation()

            self._control_reply(call)

        def _control_reply(self, call: Callable[[], Mapping[str, Any]]) -> None:
            """A control-plane answer: the call's result, or the BedrockError it raised."""
            try:
                resp = call()
            except BedrockError as e:
                self._error(e.status, e.code, e.message)
                return
            self._send(200, resp, {})

        def _no_operation(self) -> BedrockError:
            return BedrockError(404, "UnknownOperationException", f"no operation at {self.path}")

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
