"""An asyncio face on TieredClient, for async web services.

There is one implementation of the routing, escalation, failover and logging policy:
TieredClient's. Each request runs it on a worker thread of a bounded pool, with an
asyncio.Semaphore holding back requests beyond `max_concurrency` so a burst waits in the
event loop instead of piling up threads or connections. Size the boto3 connection pool
(BedrockClientConfig.max_pool_connections) to at least `max_concurrency`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serving.checks import Check
from serving.conversation import ConverseRequest
from serving.tiered_client import StreamDelta, StreamDone, TieredClient, TieredResponse

_END = object()


class AsyncTieredClient:
    """`await converse(...)` and `async for ev in converse_stream(...)`, same semantics
    (and the same outcome records) as the TieredClient it wraps."""

    def __init__(self, client: TieredClient, max_concurrency: int = 32) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ValueError(f"max_concurrency must be an integer, got {max_concurrency!r}")
        if not 1 <= max_concurrency <= 1024:
            raise ValueError(f"max_concurrency must be in [1, 1024], got {max_concurrency}")
        self.client = client
        self.max_concurrency = max_concurrency
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="tiered")
        self._slots: asyncio.Semaphore | None = None  # made on first use, in the running loop

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots

    async def converse(
        self,
        request: str | ConverseRequest | Sequence[Mapping[str, Any]],
        *,
        system: str | None = None,
        tool_config: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        checks: Sequence[Check] = (),
        request_id: str | None = None,
    ) -> TieredResponse:
        """TieredClient.converse on the pool; raises what it raises."""
        loop = asyncio.get_running_loop()
        async with self._semaphore():
            return await loop.run_in_executor(
                self._pool,
                lambda: self.client.converse(
                    request,
                    system=system,
                    tool_config=tool_config,
                    conversation_id=conversation_id,
                    tags=tags,
                    checks=checks,
                    request_id=request_id,
                ),
            )

    async def converse_stream(
        self,
        request: str | ConverseRequest | Sequence[Mapping[str, Any]],
        *,
        system: str | None = None,
        tool_config: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        checks: Sequence[Check] = (),
        request_id: str | None = None,
        verify: bool = False,
    ) -> AsyncIterator[StreamDelta | StreamDone]:
        """TieredClient.converse_stream, each event read on the pool as it arrives; the
        request holds one concurrency slot until its stream ends."""
        loop = asyncio.get_running_loop()
        async with self._semaphore():
            events: Iterator[StreamDelta | StreamDone] = self.client.converse_stream(
                request,
                system=system,
                tool_config=tool_config,
                conversation_id=conversation_id,
                tags=tags,
                checks=checks,
                request_id=request_id,
                verify=verify,
            )
            while True:
                ev = await loop.run_in_executor(self._pool, next, events, _END)
                if ev is _END:
                    return
                assert isinstance(ev, StreamDelta | StreamDone)
                yield ev

    def close(self) -> None:
        """Wait for running requests, then release the threads."""
        self._pool.shutdown(wait=True)

    async def __aenter__(self) -> AsyncTieredClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)
