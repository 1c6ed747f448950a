"""AsyncTieredClient under load with injected throttling, through real boto3."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from realdata import require_shared, slice_outcomes

from fake_bedrock import FaultConfig, LocalBedrock, OutcomeIndex
from outcomes import read_outcomes
from router.ladder import Ladder
from serving.async_client import AsyncTieredClient
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log
from serving.routing import FixedTierRouter
from serving.tiered_client import StreamDelta, StreamDone, TieredClient, TieredClientConfig


def test_async_load_with_throttling_fails_nothing_and_logs_everything(
    ladder: Ladder, tmp_path: Path
) -> None:
    src = require_shared("routerarena.jsonl.gz")
    recs = read_outcomes(slice_outcomes(src, tmp_path / "ra.jsonl", 1, 60), split="test")
    prompts = [r.prompt for r in recs]
    log = tmp_path / "log.jsonl"
    n, concurrency = 240, 16
    with LocalBedrock(
        ladder, OutcomeIndex(recs, ladder), FaultConfig(throttle_rate=0.2, seed=3)
    ) as srv:
        bedrock = make_bedrock_client(
            BedrockClientConfig(
                endpoint_url=srv.url,
                dummy_credentials=True,
                max_attempts=4,
                retry_delay_scale=0.001,
                max_pool_connections=concurrency,
            )
        )
        logger = OutcomeLogger([JsonlSink(log)])
        client = TieredClient(FixedTierRouter(ladder, 0), bedrock, logger, TieredClientConfig())

        async def one(i: int) -> str:
            res = await aclient.converse(prompts[i % len(prompts)], tags={"i": str(i)})
            return res.tier

        async def stream_one() -> tuple[str, StreamDone]:
            text, done = "", None
            async for ev in aclient.converse_stream(prompts[0]):
                if isinstance(ev, StreamDelta):
                    text += ev.text
                else:
                    done = ev
            assert done is not None
            return text, done

        async def main() -> tuple[list[str], tuple[str, StreamDone]]:
            tiers = await asyncio.gather(*(one(i) for i in range(n)))
            return tiers, await stream_one()

        aclient = AsyncTieredClient(client, max_concurrency=concurrency)
        tiers, (text, done) = asyncio.run(main())
        aclient.close()
        logger.close()
        stats = dict(srv.stats)
    assert len(tiers) == n and stats["throttled"] > 0.1 * n  # really throttled, none failed
    assert text == done.response.text and text
    logged = list(read_log(log))
    assert len(logged) == n + 1 and len({r["request_id"] for r in logged}) == n + 1
    assert sorted(int(r["tags"]["i"]) for r in logged if "i" in r["tags"]) == list(range(n))
    retried = [r for r in logged if r["attempts"][0]["outcome"] == "unavailable"]
    assert all(r["ok"] for r in logged) and all(r["final_tier"] != "haiku" for r in retried)


def test_async_client_validates_concurrency(ladder: Ladder) -> None:
    client = TieredClient(FixedTierRouter(ladder, 0), object())
    with pytest.raises(ValueError, match=r"max_concurrency must be in \[1, 1024\]"):
        AsyncTieredClient(client, max_concurrency=0)
