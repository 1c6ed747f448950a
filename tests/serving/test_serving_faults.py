"""Retries, failover and fallback, with botocore's real retry handler against the local server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from serving_support import client_for, free_port

from fake_bedrock import ErrorReply, LocalBedrock, Reply
from router.decision import Decision
from router.ladder import Ladder, Tier
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log
from serving.routing import FixedTierRouter
from serving.tiered_client import TieredClient, TieredClientConfig, TieredClientError

OK = Reply("Paris is the capital of France.")
THROTTLE = ErrorReply(429, "ThrottlingException", "Too many requests")


def counting(errors: Mapping[str, list[ErrorReply | None]]):
    """Per model: the scripted error for each successive call (None = answer)."""
    calls: Counter[str] = Counter()

    def responder(model_id: str, body: Mapping[str, Any]) -> Reply | ErrorReply:
        n = calls[model_id]
        calls[model_id] += 1
        plan = errors.get(model_id, [])
        step = plan[n] if n < len(plan) else (plan[-1] if plan else None)
        return step if step is not None else OK

    return responder, calls


def make(bedrock: Any, ladder: Ladder, tmp_path: Path, tier: int = 0, **cfg: Any) -> TieredClient:
    logger = OutcomeLogger([JsonlSink(tmp_path / "log.jsonl")])
    return TieredClient(FixedTierRouter(ladder, tier), bedrock, logger, TieredClientConfig(**cfg))


def test_throttling_is_retried_by_botocore_then_succeeds(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    haiku = ladder.tiers[0].model_id
    server.responder, calls = counting({haiku: [THROTTLE, THROTTLE, None]})
    res = make(bedrock, ladder, tmp_path).converse("capital of France?")
    assert res.tier == "haiku" and res.ok and calls[haiku] == 3
    assert [a.outcome for a in res.attempts] == ["passed"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (THROTTLE, "ThrottlingException"),
        (ErrorReply(503, "ServiceUnavailableException"), "ServiceUnavailableException"),
        (ErrorReply(500, "InternalServerException"), "InternalServerException"),
    ],
)
def test_retry_exhaustion_fails_over_to_next_tier(
    error: ErrorReply, code: str, server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    haiku = ladder.tiers[0].model_id
    server.responder, calls = counting({haiku: [error]})
    res = make(bedrock, ladder, tmp_path).converse("capital of France?")
    assert calls[haiku] == 3  # max_attempts=3 in the fixture client
    assert res.tier == "sonnet" and res.ok and res.escalations == 0
    first = res.attempts[0]
    assert (first.outcome, first.error_code) == ("unavailable", code)
    assert res.attempts[1].role == "failover"
    rec = next(read_log(tmp_path / "log.jsonl"))
    assert rec["attempts"][0]["outcome"] == "unavailable"


def test_fallback_model_when_top_unavailable(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.unavailable_models.update(t.model_id for t in ladder.tiers[1:])
    server.responder = lambda m, b: OK
    fb = Tier("fallback", "amazon.nova-pro-v1:0", "nova-pro", 0.8, 3.2, max_tokens=256)
    res = make(bedrock, ladder, tmp_path, tier=1, fallback=fb, failover_down=False).converse("q")
    assert res.model_id == "amazon.nova-pro-v1:0" and res.tier == "fallback"
    assert [a.role for a in res.attempts] == ["decided", "failover", "fallback"]
    assert server.requests[-1]["body"]["inferenceConfig"]["maxTokens"] == 256


def test_failover_down_when_nothing_above_answers(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.unavailable_models.add(ladder.tiers[2].model_id)
    server.responder = lambda m, b: OK
    res = make(bedrock, ladder, tmp_path, tier=2).converse("q")
    assert res.tier == "sonnet" and res.attempts[-1].role == "failover_down"


def test_everything_down_raises_saying_what_was_tried(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.unavailable_models.update(t.model_id for t in ladder.tiers)
    with pytest.raises(TieredClientError) as err:
        make(bedrock, ladder, tmp_path, tier=1).converse("q", request_id="req-1")
    msg = str(err.value)
    for name in ("haiku", "sonnet", "opus", "ServiceUnavailableException"):
        assert name in msg
    assert [a.tier for a in err.value.attempts] == ["sonnet", "opus", "haiku"]
    rec = next(read_log(tmp_path / "log.jsonl"))  # logged before raising
    assert rec["request_id"] == "req-1" and rec["ok"] is False and rec["final_tier"] is None


def test_unknown_model_is_a_validation_error_and_fails_over(
    server: LocalBedrock, ladder: Ladder, tmp_path: Path
) -> None:
    bad = Ladder((Tier("ghost", "no.such-model", "x", 1, 1), *ladder.tiers[1:]))
    res = make(client_for(server.url), bad, tmp_path).converse("q")
    assert res.attempts[0].outcome == "error"
    assert res.attempts[0].error_code == "ValidationException"
    assert res.tier == "sonnet"


def test_unreachable_endpoint_raises_after_trying_all(ladder: Ladder, tmp_path: Path) -> None:
    dead = client_for(f"http://127.0.0.1:{free_port()}", max_attempts=2)
    with pytest.raises(TieredClientError, match="EndpointConnectionError"):
        make(dead, ladder, tmp_path).converse("q")
    assert len(list(read_log(tmp_path / "log.jsonl"))) == 1


class BrokenRouter:
    def __init__(self, ladder: Ladder) -> None:
        self.ladder = ladder
        self.version = "broken"

    def route(self, text: str) -> Decision:
        raise RuntimeError("bundle corrupt")


def test_router_failure_uses_failsafe_tier(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = lambda m, b: OK
    logger = OutcomeLogger([JsonlSink(tmp_path / "log.jsonl")])
    client = TieredClient(
        BrokenRouter(ladder), bedrock, logger, TieredClientConfig(failsafe_tier="sonnet")
    )
    res = client.converse("q")
    assert res.tier == "sonnet"
    rec = next(read_log(tmp_path / "log.jsonl"))
    assert "bundle corrupt" in rec["route_error"] and rec["router_version"] == "failsafe"
