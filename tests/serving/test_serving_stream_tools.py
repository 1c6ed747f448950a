"""ConverseStream and tool use through real boto3 against the local server, on real prompts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from realdata import require_shared, slice_outcomes
from serving_support import client_for

from fake_bedrock import ErrorReply, LocalBedrock, OutcomeIndex, Reply
from outcomes import OutcomeRecord, read_outcomes
from router.ladder import Ladder
from serving.checks import Answer, CallableCheck
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log
from serving.pricing import thinking_cost_bound
from serving.routing import FixedTierRouter
from serving.tiered_client import StreamDelta, StreamDone, TieredClient, TieredClientConfig

THROTTLE = ErrorReply(429, "ThrottlingException", "Too many requests")


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[OutcomeRecord]:
    src = require_shared("mmlu_pro.jsonl.gz")
    path = slice_outcomes(src, tmp_path_factory.mktemp("stream") / "m.jsonl", 1, 12)
    return read_outcomes(path, split="test")


def make(bedrock: Any, ladder: Ladder, log: Path, tier: int = 0, **cfg: Any) -> TieredClient:
    logger = OutcomeLogger([JsonlSink(log)])
    return TieredClient(FixedTierRouter(ladder, tier), bedrock, logger, TieredClientConfig(**cfg))


def drain(events: Any) -> tuple[str, StreamDone]:
    deltas, done = [], None
    for ev in events:
        if isinstance(ev, StreamDelta):
            assert done is None, "no delta after the end"
            deltas.append(ev.text)
        else:
            assert isinstance(ev, StreamDone)
            done = ev
    assert done is not None
    return "".join(deltas), done


def test_streamed_answer_equals_converse_for_recorded_prompts(
    ladder: Ladder, records: list[OutcomeRecord], tmp_path: Path
) -> None:
    log = tmp_path / "log.jsonl"
    with LocalBedrock(ladder, OutcomeIndex(records, ladder)) as srv:
        client = make(client_for(srv.url), ladder, log, tier=1)
        for rec in records[:6]:
            whole = client.converse(rec.prompt)
            text, done = drain(client.converse_stream(rec.prompt))
            assert text == whole.text and len(text) > 20
            assert done.response.text == whole.text and done.response.tier == "sonnet"
            assert done.response.usage == whole.usage and done.response.cost_usd > 0
            assert done.record["stream"]["verify"] is False
            assert len(done.response.deltas) > 1  # it really came in pieces
        assert srv.stats["answered"] == 12
    client.logger.close()  # type: ignore[union-attr]
    logged = list(read_log(log))
    assert len(logged) == 12 and sum("stream" in r for r in logged) == 6
    assert {r["request_id"] for r in logged} >= {done.record["request_id"]}


def test_throttled_stream_start_is_retried_then_fails_over(
    ladder: Ladder, records: list[OutcomeRecord], tmp_path: Path
) -> None:
    calls: Counter[str] = Counter()
    haiku = ladder.tiers[0].model_id
    index = OutcomeIndex(records, ladder)

    def responder(model_id: str, body: Mapping[str, Any]) -> ErrorReply | None:
        calls[model_id] += 1
        return THROTTLE if model_id == haiku else None  # None: the recorded answer

    log = tmp_path / "log.jsonl"
    with LocalBedrock(ladder, index, responder=responder) as srv:
        client = make(client_for(srv.url, max_attempts=3), ladder, log, tier=0)
        text, done = drain(client.converse_stream(records[0].prompt))
    assert calls[haiku] == 3  # botocore retried the start twice before giving up
    roles = [(a.tier, a.role, a.outcome) for a in done.response.attempts]
    assert roles == [("haiku", "decided", "unavailable"), ("sonnet", "failover", "passed")]
    assert done.response.attempts[0].error_code == "ThrottlingException"
    assert text == done.response.text and text
    client.logger.close()  # type: ignore[union-attr]
    (rec,) = read_log(log)
    assert rec["final_tier"] == "sonnet" and rec["attempts"][0]["outcome"] == "unavailable"


def test_a_stream_the_caller_abandons_is_still_logged(
    ladder: Ladder, records: list[OutcomeRecord], tmp_path: Path
) -> None:
    log = tmp_path / "log.jsonl"
    with LocalBedrock(ladder, OutcomeIndex(records, ladder)) as srv:
        client = make(client_for(srv.url), ladder, log, tier=2)
        events = client.converse_stream(records[3].prompt)
        assert isinstance(next(events), StreamDelta)
        events.close()  # e.g. the HTTP client of a chat front end went away
    client.logger.close()  # type: ignore[union-attr]
    (rec,) = read_log(log)
    assert rec["ok"] is False and rec["failure_reason"] == "no_answer"
    assert [a["reason"] for a in rec["attempts"]] == ["caller_closed_stream"]


def test_buffered_verification_escalates_before_releasing(
    ladder: Ladder, records: list[OutcomeRecord], tmp_path: Path
) -> None:
    """verify=True: haiku's streamed answer fails a check, so nothing of it is released."""
    index = OutcomeIndex(records, ladder)
    reject_haiku = CallableCheck(lambda a: a.tier != "haiku", name="not_haiku")
    with LocalBedrock(ladder, index) as srv:
        client = make(client_for(srv.url), ladder, tmp_path / "log.jsonl")
        client.checks = (reject_haiku,)
        text, done = drain(client.converse_stream(records[1].prompt, verify=True))
        whole = client.converse(records[1].prompt)
    assert [a.outcome for a in done.response.attempts] == ["failed", "passed"]
    assert done.response.tier == "sonnet" and done.response.escalations == 1
    assert text == whole.text  # only the escalated answer was streamed to the caller
    assert done.record["stream"] == {"verify": True}


WEATHER = {
    "tools": [
        {
            "toolSpec": {
                "name": "lookup",
                "description": "Look a fact up.",
                "inputSchema": {"json": {"type": "object"}},
            }
        }
    ]
}


def test_tool_use_conversation_completes_on_routed_tier(
    ladder: Ladder, records: list[OutcomeRecord], tmp_path: Path
) -> None:
    """Three tool calls then an answer: no escalation, sticky tier, tool blocks on the wire."""
    question = records[2].prompt
    seen: list[dict[str, Any]] = []

    def agent(model_id: str, body: Mapping[str, Any]) -> Reply:
        seen.append({"model": model_id, "body": body})
        results = [
            b["toolResult"] for m in body["messages"] for b in m["content"] if "toolResult" in b
        ]
        if len(results) < 3:
            call = {"toolUseId": f"t{len(results)}", "name": "lookup", "input": {"q": len(results)}}
            # A hedge before a tool call is not a refusal: the builtin checks must pass it.
            return Reply("I'm not sure; let me look that up.", "tool_use", 12, ({"toolUse": call},))
        facts = ", ".join(r["content"][0]["text"] for r in results)
        return Reply(f"From {facts}: the answer is B.", "end_turn")

    log = tmp_path / "log.jsonl"
    with LocalBedrock(ladder, responder=agent) as srv:
        client = make(client_for(srv.url), ladder, log, tier=1)
        messages: list[dict[str, Any]] = [{"role": "user", "content": [{"text": question}]}]
        stops = []
        for turn in range(4):
            if turn == 3:  # the last turn streamed, to show tools and streams mix
                _, done = drain(
                    client.converse_stream(messages, tool_config=WEATHER, conversation_id="c1")
                )
                res = done.response
            else:
                res = client.converse(messages, tool_config=WEATHER, conversation_id="c1")
            stops.append(res.stop_reason)
            assert res.ok and res.escalations == 0 and res.tier == "sonnet"
            messages.append({"role": "assistant", "content": list(res.message["content"])})
            if res.stop_reason == "tool_use":
                (use,) = [b["toolUse"] for b in res.message["content"] if "toolUse" in b]
                result = {
                    "toolUseId": use["toolUseId"],
                    "content": [{"text": f"fact{use['input']['q']}"}],
                }
                messages.append({"role": "user", "content": [{"toolResult": result}]})
    assert stops == ["tool_use", "tool_use", "tool_use", "end_turn"]
    assert res.text == "From fact0, fact1, fact2: the answer is B."
    assert {s["model"] for s in seen} == {ladder.tiers[1].model_id}
    assert all(s["body"]["toolConfig"]["tools"][0]["toolSpec"]["name"] == "lookup" for s in seen)
    client.logger.close()  # type: ignore[union-attr]
    logged = list(read_log(log))
    assert len(logged) == 4 and [r["final_stop_reason"] for r in logged] == stops
    assert [r["sticky"] for r in logged] == [False, True, True, True]
    assert [r["turns"] for r in logged] == [1, 3, 5, 7]


def test_sticky_conversation_never_moves_down(ladder: Ladder, tmp_path: Path) -> None:
    """A turn escalated to opus pins opus; a later turn whose opus is down fails over to a
    cheaper tier for that turn only, and the pin stays at opus."""
    down = {"on": False}

    def responder(model_id: str, body: Mapping[str, Any]) -> Reply | ErrorReply:
        if model_id == ladder.tiers[2].model_id and down["on"]:
            return ErrorReply(503, "ServiceUnavailableException", "down")
        return Reply(
            "A fine answer to the question." if model_id != ladder.tiers[0].model_id else ""
        )

    with LocalBedrock(ladder, responder=responder) as srv:
        client = make(client_for(srv.url, max_attempts=1), ladder, tmp_path / "l.jsonl")
        client.checks = (CallableCheck(lambda a: a.tier == "opus", name="opus_only"),)
        first = client.converse("Explain the result.", conversation_id="c")
        assert first.tier == "opus"
        down["on"] = True
        msgs = [
            {"role": "user", "content": [{"text": "Explain the result."}]},
            {"role": "assistant", "content": [{"text": first.text}]},
            {"role": "user", "content": [{"text": "And why?"}]},
        ]
        client.checks = ()
        second = client.converse(msgs, conversation_id="c")
        assert second.tier == "sonnet" and second.attempts[0].tier == "opus"
        down["on"] = False
        third = client.converse(msgs, conversation_id="c")
    assert third.tier == "opus" and third.attempts[0].role == "decided"


def test_tool_blocks_without_tool_config_are_refused_before_sending(
    ladder: Ladder, tmp_path: Path
) -> None:
    from serving.conversation import RequestError

    with LocalBedrock(ladder) as srv:
        client = make(client_for(srv.url), ladder, tmp_path / "l.jsonl")
        msgs = [
            {"role": "user", "content": [{"text": "q"}]},
            {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "a", "name": "x", "input": {}}}],
            },
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": "a", "content": [{"text": "r"}]}}],
            },
        ]
        with pytest.raises(RequestError, match="no tool_config"):
            client.converse(msgs)
        with pytest.raises(RequestError, match="non-empty tools"):
            client.converse("q", tool_config={"tools": []})
        assert srv.stats["requests"] == 0


def test_thinking_tier_sends_additional_fields_and_prices_its_tokens(tmp_path: Path) -> None:
    lad = Ladder.load(Path(__file__).resolve().parents[2] / "data/ladders/mmlu_pro_thinking.toml")
    seen: list[Mapping[str, Any]] = []

    def responder(model_id: str, body: Mapping[str, Any]) -> Reply:
        seen.append(body)
        return Reply("Reasoned answer: C.", "end_turn", output_tokens=3000)  # thinking included

    with LocalBedrock(lad, responder=responder) as srv:
        client = make(client_for(srv.url), lad, tmp_path / "l.jsonl", tier=2)
        res = client.converse("What is 17 * 23?")
        text, done = drain(client.converse_stream("What is 17 * 23?"))
    assert res.tier == "sonnet-thinking" and text == res.text
    assert [b.get("additionalModelRequestFields") for b in seen] == [
        {"thinking": {"type": "enabled", "budget_tokens": 4096}}
    ] * 2
    assert seen[0]["inferenceConfig"]["maxTokens"] == 6144
    # Bedrock bills the reasoning tokens as output tokens: 3000 output at $15/Mtok.
    assert res.usage.output_tokens == 3000
    assert res.cost_usd == pytest.approx((res.usage.input_tokens * 3.0 + 3000 * 15.0) / 1e6)
    assert json.loads(json.dumps(done.record))["final_tier"] == "sonnet-thinking"
    assert thinking_cost_bound(lad.tiers[2]) == pytest.approx(4096 * 15.0 / 1e6)
    assert thinking_cost_bound(lad.tiers[1]) == 0.0


def test_a_hedge_is_still_escalated_when_it_is_not_a_tool_call() -> None:
    from serving.checks import builtin_checks

    def verdicts(stop: str) -> list[str | None]:
        a = Answer("I'm not sure; let me look that up.", stop, "haiku", "m", "q")
        return [c(a) for c in builtin_checks()]

    assert "refusal" in verdicts("end_turn") and set(verdicts("tool_use")) == {None}


def test_cascade_does_not_judge_a_tool_turn_and_verifies_buffered_streams(
    cascade_train: Any, answers_slice: Path, tmp_path: Path
) -> None:
    from router import Router

    router = Router.load(cascade_train.bundle)
    lad = router.ladder
    recs = [
        r
        for r in read_outcomes(answers_slice, "test")
        if all(
            len(str(r.results[t.outcomes_key].extra.get("answer", ""))) < t.max_tokens * 3
            for t in (*lad.tiers, lad.second_opinion)
            if t is not None
        )
    ][:4]
    index = OutcomeIndex(recs, lad)
    tool_mode = {"on": False}

    def responder(model_id: str, body: Mapping[str, Any]) -> Reply | None:
        if not tool_mode["on"]:
            return None  # the recorded real answer
        call = {"toolUseId": "t0", "name": "lookup", "input": {"q": "x"}}
        return Reply("", "tool_use", 8, ({"toolUse": call},))

    log = tmp_path / "log.jsonl"
    with LocalBedrock(lad, index, responder=responder) as srv:
        logger = OutcomeLogger([JsonlSink(log)])
        client = TieredClient(router, client_for(srv.url), logger, TieredClientConfig())
        assert client.verifier is not None
        for rec in recs:
            whole = client.converse(rec.prompt)
            text, done = drain(client.converse_stream(rec.prompt, verify=True))
            assert text == whole.text
            assert [a.tier for a in done.response.attempts] == [a.tier for a in whole.attempts]
        tool_mode["on"] = True
        res = client.converse(recs[0].prompt, tool_config=WEATHER)
    logger.close()
    assert res.stop_reason == "tool_use" and res.ok and res.escalations == 0
    (attempt,) = res.attempts  # no verifier verdict, no second opinion, no escalation
    assert attempt.verifier is None and attempt.role == "decided"
    logged = list(read_log(log))
    assert len(logged) == 2 * len(recs) + 1
    for plain, streamed in zip(logged[0:-1:2], logged[1:-1:2], strict=True):
        # The buffered stream walked the cascade exactly as converse did: same calls, verdicts.
        assert streamed["stream"] == {"verify": True} and "stream" not in plain
        # (Cascade exploration runs after a plain converse only: its block is not compared.)
        walked = {k: v for k, v in plain["cascade"].items() if k != "explore"}
        assert streamed["cascade"] == walked and plain["cascade"]["judgements"]
    last = logged[-1]
    assert last["final_stop_reason"] == "tool_use" and last["cascade"]["judgements"] == []


def test_event_frames_parse_with_botocore_and_reject_corruption() -> None:
    from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

    from fake_bedrock import event_frame

    frame = event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo"}})
    buf = EventStreamBuffer()
    buf.add_data(frame)
    (msg,) = list(buf)
    assert msg.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(msg.payload)["delta"]["text"] == "héllo"
    bad = EventStreamBuffer()
    bad.add_data(frame[:-5] + bytes([frame[-5] ^ 1]) + frame[-4:])
    with pytest.raises(ChecksumMismatch):
        list(bad)
