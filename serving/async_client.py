"""An asyncio face on TieredClient, for async web services.

There is one implementation of the routing, escalation, failover and logging policy:
TieredClient's. Each request runs it on a worker thread of a bounded pool, with an
asyncio.Semaphore holding back requests beyond `max_concurrency` so a burst waits in the
event loop instead of piling up threads or connections. Size the boto3 connection pool
(BedrockClientConfig.max_pool_connections) to at least `max_concurrency`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Unpack

from serving.request_plan import ConverseOptions, RequestLike
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
        self, request: RequestLike, **options: Unpack[ConverseOptions]
    ) -> TieredResponse:
        """TieredClient.converse on the pool; raises what it raises."""
        loop = asyncio.get_running_loop()
        async with self._semaphore():
            return await loop.run_in_executor(
                self._pool, lambda: self.client.converse(request, **options)
            )

    async def converse_stream(
        self, request: RequestLike, *, verify: bool = False, **options: Unpack[ConverseOptions]
    ) -> AsyncIterator[StreamDelta | StreamDone]:
        """TieredClient.converse_stream, each event read on the pool as it arrives; the
        request holds one concurrency slot until its stream ends."""
        loop = asyncio.get_running_loop()
        async with self._semaphore():
            events = self.client.converse_stream(request, verify=verify, **options)
            while True:
                ev = await loop.run_in_executor(self._pool, next, events, _END)
                if ev is _END:
                    return
                assert isinstance(ev, StreamDelta | StreamDone)
                yield ev

    def close(self) -> None:
        """Wait for running requests, then release the threads; then the client's
        cascade exploration calls in flight (their records are written)."""
        self._pool.shutdown(wait=True)
        self.client.close()

    async def __aenter__(self) -> AsyncTieredClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)
