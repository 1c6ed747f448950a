"""converse_stream's events, and its unbuffered path: fail over until a tier's stream
yields its first event, then commit to that tier and pass its text on as it arrives.

(`verify=True` streams are the ordinary walks over buffered calls; see TierCaller.)
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router.ladder import Ladder, Tier
from serving.attempts import ERROR, Answered, Attempt, TieredClientError, TieredResponse, keep
from serving.checks import Check
from serving.client_config import TieredClientConfig
from serving.pricing import Usage
from serving.tier_call import CallFailure, StreamAssembler, TierCaller, ms_since


@dataclass(frozen=True)
class StreamDelta:
    """A piece of the answer's text, yielded as it arrives."""

    text: str


@dataclass(frozen=True)
class StreamDone:
    """The end of a stream: the full response (usage, cost, tier) and its outcome record."""

    response: TieredResponse
    record: Mapping[str, Any]


# finish(attempts, final answer, the record's `stream` block): logs the request's outcome
# record, then returns (response, record), or raises TieredClientError when final is None.
Finish = Callable[
    [list[Attempt], Answered | None, dict[str, Any]], tuple[TieredResponse, dict[str, Any]]
]


def failover_order(
    ladder: Ladder, config: TieredClientConfig, start: int
) -> list[tuple[Tier, str]]:
    """Where a stream may start, in order, with each one's role: the routed tier, the
    tiers above it, the fallback, then (when allowed) the cheaper tiers."""
    top = len(ladder) - 1
    order = [
        (ladder.tiers[i], "decided" if i == start else "failover") for i in range(start, top + 1)
    ]
    if config.fallback is not None:
        order.append((config.fallback, "fallback"))
    if config.failover_down:
        order += [(ladder.tiers[i], "failover_down") for i in range(start - 1, -1, -1)]
    return order


def stream_live(
    caller: TierCaller,
    order: list[tuple[Tier, str]],
    body: dict[str, Any],
    text: str,
    checks: tuple[Check, ...],
    finish: Finish,
) -> Generator[StreamDelta | StreamDone, None, None]:
    """Unbuffered: fail over until a stream yields its first event, then commit."""
    attempts: list[Attempt] = []
    for tier, role in order:
        t = time.perf_counter()
        opened = caller.open_stream(tier, body)
        if isinstance(opened, CallFailure):  # no stream: fail over, the caller saw nothing
            attempts.append(
                caller.unanswered(
                    tier, role, opened.outcome, opened.reason, Usage(), ms_since(t), opened.code
                )
            )
            continue
        first, events = opened
        asm = StreamAssembler()
        try:
            with contextlib.closing(events):  # the EventStream is closed on every path
                for event in itertools.chain((first,), events):
                    piece = asm.feed(event)
                    if piece:
                        yield StreamDelta(piece)
        except GeneratorExit:  # the caller stopped reading: still one record
            usage = Usage.from_bedrock(asm.usage)
            attempts.append(
                caller.unanswered(tier, role, ERROR, "caller_closed_stream", usage, ms_since(t))
            )
            with contextlib.suppress(TieredClientError):
                finish(attempts, None, {"verify": False})
            raise
        except Exception as e:  # broken mid-stream (botocore or not): committed, so fail
            usage = Usage.from_bedrock(asm.usage)
            known = isinstance(e, ClientError | BotoCoreError)
            reason = f"stream_broken: {'' if known else type(e).__name__ + ': '}{e}"[:300]
            attempts.append(
                caller.unanswered(tier, role, ERROR, reason, usage, ms_since(t), type(e).__name__)
            )
            finish(attempts, None, {"verify": False})  # logs, then raises TieredClientError
            return
        got = keep(
            attempts,
            caller.judge(tier, role, asm.response(), text, checks, ms_since(t), asm.deltas),
        )
        if got is None:  # a malformed stream before any text: fail over
            if not asm.deltas:
                continue
            break
        live = {"verify": False, "first_event_ms": round(asm.first_ms(t), 3)}
        response, record = finish(attempts, got, live)
        yield StreamDone(response, record)
        return
    finish(attempts, None, {"verify": False})
