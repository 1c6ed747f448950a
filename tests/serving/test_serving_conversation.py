"""Routing on the whole conversation, sticky tiers and priced prompt caching."""

from __future__ import annotations

from typing import Any

import pytest

from fake_bedrock import LocalBedrock, Reply
from router.decision import Decision
from router.ladder import Ladder
from serving.conversation import ConverseRequest, RequestError
from serving.pricing import CachePricing, cost_usd
from serving.tiered_client import TieredClient, TieredClientConfig

SYSTEM = "You are a careful assistant. " * 40  # long enough to be worth caching


class KeywordRouter:
    """A real router for tests: 'hard' anywhere in the text -> top tier, else cheapest."""

    version = "keyword/1"

    def __init__(self, ladder: Ladder) -> None:
        self.ladder = ladder
        self.seen: list[str] = []

    def route(self, text: str) -> Decision:
        self.seen.append(text)
        i = len(self.ladder) - 1 if "hard" in text else 0
        t = self.ladder.tiers[i]
        return Decision(t.name, i, t.model_id, t.max_tokens, {"haiku": 0.5}, self.version)


def turn(history: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [*history, {"role": "user", "content": [{"text": text}]}]


def reply(res: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"text": res.text}]}


@pytest.fixture
def chat(server: LocalBedrock, bedrock: Any, ladder: Ladder):
    server.responder = lambda m, b: Reply("Here is a detailed, helpful reply.")

    def make(**cfg: Any) -> tuple[TieredClient, KeywordRouter]:
        router = KeywordRouter(ladder)
        return TieredClient(router, bedrock, None, TieredClientConfig(**cfg)), router

    return make


def test_routes_on_the_whole_conversation(chat: Any) -> None:
    client, router = chat()
    first = turn([], "This is a hard proof question.")
    r1 = client.converse(first)
    r2 = client.converse(turn([*first, reply(r1)], "Why?"))
    assert r2.tier == "opus"  # "Why?" alone would route cheap
    assert "hard proof" in router.seen[-1] and router.seen[-1].endswith("Why?")


def test_conversation_stays_on_its_tier(chat: Any) -> None:
    client, _ = chat()
    h = turn([], "Say hi.")
    r1 = client.converse(h, conversation_id="c1")
    assert r1.tier == "haiku"
    r2 = client.converse(turn([*h, reply(r1)], "Now a hard one."), conversation_id="c1")
    assert r2.tier == "haiku" and r2.decision.tier == "opus"  # decided opus, stayed
    r3 = client.converse(turn([*h, reply(r1)], "Now a hard one."), conversation_id="other")
    assert r3.tier == "opus"


def test_escalation_moves_the_conversation_up(
    server: LocalBedrock, chat: Any, ladder: Ladder
) -> None:
    client, _ = chat()
    haiku = ladder.tiers[0].model_id
    server.responder = lambda m, b: Reply("I don't know.") if m == haiku else Reply("Fine.")
    h = turn([], "q1")
    r1 = client.converse(h, conversation_id="c")
    assert r1.tier == "sonnet"
    server.responder = lambda m, b: Reply("Fine.")
    r2 = client.converse(turn([*h, reply(r1)], "q2"), conversation_id="c")
    assert r2.tiers_tried == ["sonnet"]


def test_prompt_caching_reads_on_the_sticky_tier_and_is_priced(
    chat: Any, server: LocalBedrock, ladder: Ladder
) -> None:
    client, _ = chat(prompt_caching=True)
    h = turn([], "Summarise the attached notes.")
    r1 = client.converse(h, system=SYSTEM, conversation_id="c")
    u1 = r1.usage
    assert u1.cache_write_input_tokens > 0 and u1.cache_read_input_tokens == 0
    assert server.requests[0]["body"]["system"][-1] == {"cachePoint": {"type": "default"}}
    r2 = client.converse(
        turn([*h, reply(r1)], "And the hard part?"), system=SYSTEM, conversation_id="c"
    )
    u2 = r2.usage
    assert r2.tier == "haiku"
    # the whole first turn was cached on haiku and is read back
    assert u2.cache_read_input_tokens == u1.cache_write_input_tokens
    assert u2.cache_write_input_tokens > 0
    haiku = ladder.tiers[0]
    expected = (
        u2.input_tokens * haiku.price_in_per_mtok
        + u2.cache_read_input_tokens * haiku.price_in_per_mtok * 0.1
        + u2.cache_write_input_tokens * haiku.price_in_per_mtok * 1.25
        + u2.output_tokens * haiku.price_out_per_mtok
    ) / 1e6
    assert r2.cost_usd == pytest.approx(expected)
    assert cost_usd(haiku, u2, CachePricing(1.0, 1.0)) > r2.cost_usd  # caching saved money


def test_without_stickiness_the_cache_misses(chat: Any) -> None:
    client, _ = chat(prompt_caching=True)
    h = turn([], "Summarise the attached notes.")
    r1 = client.converse(h, system=SYSTEM)
    r2 = client.converse(turn([*h, reply(r1)], "And the hard part?"), system=SYSTEM)
    assert r2.tier == "opus" and r2.usage.cache_read_input_tokens == 0


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "must not be empty"),
        ([{"role": "assistant", "content": [{"text": "x"}]}], "start and end with a user"),
        ([{"role": "user", "content": "x"}], "non-empty list"),
        ([{"role": "user", "content": [{"text": "a"}]}] * 2, "repeats role"),
        ([{"role": "bot", "content": [{"text": "a"}]}], "role must be"),
    ],
)
def test_malformed_requests_are_rejected(messages: Any, match: str) -> None:
    with pytest.raises(RequestError, match=match):
        ConverseRequest.build(messages)
