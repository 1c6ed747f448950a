"""The fake Bedrock server: replay, faults, the wire and the batch plane put together.

It also simulates per-model prompt caching from `cachePoint` blocks.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import Any

from fake_bedrock.batch import BatchJobs
from fake_bedrock.errors import BedrockError
from fake_bedrock.faults import FaultConfig, drawn_fault, unavailable
from fake_bedrock.replay import ErrorReply, OutcomeIndex, Reply, Responder, digest, recorded_reply
from fake_bedrock.wire import Segments, make_handler, parse_request
from router.ladder import Ladder
from router.tokens import estimate_tokens


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
        self._server = ThreadingHTTPServer((host, port), make_handler(self))
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
            raise unavailable()
        fault = drawn_fault(self.faults, u_throttle, u_error, u_kind)
        if fault is not None:
            self._count(fault[0])
            raise fault[1]
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
        max_tokens, segs, last_user = parse_request(body)
        reply = self.responder(model_id, body) if self.responder is not None else None
        if isinstance(reply, ErrorReply):
            self._count("scripted_errors")
            raise BedrockError(reply.status, reply.code, reply.message)
        if reply is None:
            if known is None:
                raise BedrockError(
                    400, "ValidationException", "The provided model identifier is invalid."
                )
            reply = recorded_reply(self.index, last_user, tier, max_tokens)
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

    def _usage(self, model_id: str, segs: Segments, reply: Reply) -> dict[str, int]:
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
                    if offset <= point and (model_id, digest(segs.text[:offset])) in self._cache:
                        hit_chars = max(hit_chars, chars)
                self._cache.add((model_id, digest(segs.text[:point])))
            read = estimate_tokens(hit_chars)
            write = estimate_tokens(point_chars) - read
            usage["inputTokens"] = total - estimate_tokens(point_chars)
            usage["cacheReadInputTokens"] = read
            usage["cacheWriteInputTokens"] = write
        usage["totalTokens"] = sum(usage.values())
        return usage
