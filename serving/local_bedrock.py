"""A local Bedrock-compatible Converse server, for tests and the offline demo.

It speaks the wire format boto3 expects (restJson: `POST /model/{modelId}/converse`,
errors named by the `x-amzn-ErrorType` header, throttling as HTTP 429), so the real
boto3 client, its retries and its error parsing are exercised unchanged. For a
prompt found in an outcomes file it answers as the recorded model did: the recorded
output length, truncated with `stopReason: max_tokens` past `maxTokens`. Whether that
answer passed is not in the text; a validator that knows the record looks it up
(`OutcomeIndex.passed`). It injects throttling, 5xx errors and latency at set rates,
and simulates per-model prompt caching from `cachePoint` blocks.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from router.ladder import Ladder, Tier
from router.outcomes import ModelResult, OutcomeRecord

_ERROR_NS = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
DEFAULT_OUTPUT_TOKENS = 200


def estimate_tokens(chars: int) -> int:
    """Tokens for `chars` characters: the outcomes contract's ceil(chars / 4)."""
    return math.ceil(chars / 4)


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
    """A scripted answer (tests use these to produce any stop reason or text)."""

    text: str
    stop_reason: str = "end_turn"
    output_tokens: int | None = None


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
    ) -> None:
        self.ladder = ladder
        self.index = index or OutcomeIndex((), ladder)
        self.faults = faults or FaultConfig()
        self.responder = responder
        self.unavailable_models: set[str] = set()
        self.stats: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []  # (model_id, body) of answered calls, for tests
        self.keep_requests = False
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._cache: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True

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
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1000)
        if model_id in self.unavailable_models:
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
            "output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
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
        if n > max_tokens:
            return Reply(
                _filler(seed, max_tokens * 4, "Working through it."), "max_tokens", max_tokens
            )
        chars = int(result.output_chars) if result.output_chars is not None else n * 4
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
            if len(parts) != 4 or parts[1] != "model" or parts[3] != "converse":
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
            self._send(200, resp, {})

        def do_GET(self) -> None:
            self._error(404, "UnknownOperationException", f"no operation at {self.path}")

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
