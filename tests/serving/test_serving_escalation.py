"""Every escalation reason, through the real boto3 client and the local Bedrock server."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fake_bedrock import LocalBedrock, Reply
from router.ladder import Ladder
from serving.checks import Answer, CallableCheck, JsonSchemaCheck, RegexCheck, SelfCheckConfig
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log
from serving.pricing import Usage, cost_usd
from serving.routing import FixedTierRouter
from serving.tiered_client import TieredClient, TieredClientConfig

GOOD = Reply("The answer is (B): the series converges by the ratio test.")


def script(ladder: Ladder, cheap: Reply, rest: Reply = GOOD):
    cheap_id = ladder.tiers[0].model_id

    def responder(model_id: str, body: Mapping[str, Any]) -> Reply:
        return cheap if model_id == cheap_id else rest

    return responder


def make(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path, **cfg: Any
) -> TieredClient:
    checks = cfg.pop("checks", ())
    logger = OutcomeLogger([JsonlSink(tmp_path / "log.jsonl")])
    return TieredClient(
        FixedTierRouter(ladder, 0), bedrock, logger, TieredClientConfig(**cfg), checks=checks
    )


def only_record(tmp_path: Path) -> dict[str, Any]:
    records = list(read_log(tmp_path / "log.jsonl"))
    assert len(records) == 1
    return records[0]


CASES = [
    ("max_tokens", Reply("Truncated answ", "max_tokens"), "stop_reason:max_tokens", {}),
    ("guardrail", Reply("blocked", "guardrail_intervened"), "stop_reason:guardrail_intervened", {}),
    ("filtered", Reply("", "content_filtered"), "stop_reason:content_filtered", {}),
    ("malformed", Reply("{", "malformed_model_output"), "stop_reason:malformed_model_output", {}),
    ("empty", Reply("   "), "empty", {}),
    ("refusal", Reply("I'm sorry, but I can't help with that."), "refusal", {}),
    ("dont_know", Reply("I don't know."), "refusal", {}),
    ("not_sure", Reply("I'm not sure which is right."), "refusal", {}),
    (
        "json_schema",
        Reply('{"answer": 7}'),
        "json_schema:invalid_at:answer",
        {"checks": [JsonSchemaCheck({"properties": {"answer": {"type": "string"}}})]},
    ),
    ("regex", Reply("It is probably fine."), "regex:no_match", {"checks": [RegexCheck(r"\(B\)")]}),
    (
        "callable",
        Reply("short"),
        "callable:long_enough",
        {"checks": [CallableCheck(lambda a: len(a.text) > 20, name="long_enough")]},
    ),
]


@pytest.mark.parametrize(("case", "cheap", "reason", "cfg"), CASES, ids=[c[0] for c in CASES])
def test_each_reason_escalates_one_tier(
    case: str,
    cheap: Reply,
    reason: str,
    cfg: dict[str, Any],
    server: LocalBedrock,
    bedrock: Any,
    ladder: Ladder,
    tmp_path: Path,
) -> None:
    rest = Reply('{"answer": "(B) by the ratio test"}') if case == "json_schema" else GOOD
    server.responder = script(ladder, cheap, rest)
    client = make(server, bedrock, ladder, tmp_path, **dict(cfg))
    res = client.converse("What does the ratio test say about sum 1/n!?")
    assert res.ok and res.tier == "sonnet" and res.text == rest.text
    assert res.tiers_tried == ["haiku", "sonnet"]
    assert res.escalations == 1
    first, second = res.attempts
    assert (first.outcome, first.reason, first.role) == ("failed", reason, "decided")
    assert (second.outcome, second.role) == ("passed", "escalation")
    assert res.cost_usd == pytest.approx(first.cost_usd + second.cost_usd)
    assert res.cost_usd > 0 and res.latency_ms > 0
    rec = only_record(tmp_path)
    assert [a["outcome"] for a in rec["attempts"]] == ["failed", "passed"]
    assert rec["attempts"][0]["reason"] == reason
    assert rec["final_tier"] == "sonnet" and rec["ok"] is True


def test_good_cheap_answer_stays_cheap(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = script(ladder, GOOD)
    res = make(server, bedrock, ladder, tmp_path).converse("easy one")
    assert res.tier == "haiku" and res.escalations == 0 and res.ok
    sent = server.requests[0]
    assert sent["modelId"] == ladder.tiers[0].model_id
    assert sent["body"]["inferenceConfig"] == {"maxTokens": ladder.tiers[0].max_tokens}
    u = res.usage
    assert res.cost_usd == pytest.approx(ladder.tiers[0].cost_usd(u.input_tokens, u.output_tokens))


def test_self_check_fail_escalates_and_is_priced(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    cheap_id = ladder.tiers[0].model_id

    def responder(model_id: str, body: Mapping[str, Any]) -> Reply:
        text = body["messages"][0]["content"][0]["text"]
        if text.startswith("You are grading"):
            assert "<answer>\nA plausible but wrong answer.\n</answer>" in text
            assert body["inferenceConfig"]["maxTokens"] == 8
            return Reply("FAIL", output_tokens=1)
        return Reply("A plausible but wrong answer.") if model_id == cheap_id else GOOD

    server.responder = responder
    client = make(server, bedrock, ladder, tmp_path, self_check=SelfCheckConfig(enabled=True))
    res = client.converse("Tricky question?")
    assert res.tier == "sonnet" and res.attempts[0].reason == "self_check"
    assert res.attempts[0].self_check is not None
    assert res.attempts[0].self_check["verdict"] == "fail"
    grading = Usage.from_bedrock({"inputTokens": 0, "outputTokens": 0}) + Usage(
        **{k: v for k, v in res.attempts[0].self_check["usage"].items()}
    )
    assert grading.input_tokens > 0 and grading.output_tokens == 1
    # the grading call's tokens and dollars are in the haiku attempt
    assert res.attempts[0].usage.input_tokens > grading.input_tokens
    assert res.attempts[0].cost_usd == pytest.approx(
        cost_usd(ladder.tiers[0], res.attempts[0].usage)
    )
    assert len(server.requests) == 3  # answer, grading, sonnet


def test_self_check_pass_stays_and_is_off_by_default(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    def responder(model_id: str, body: Mapping[str, Any]) -> Reply:
        text = body["messages"][0]["content"][0]["text"]
        return Reply("PASS", output_tokens=1) if text.startswith("You are grading") else GOOD

    server.responder = responder
    res = make(server, bedrock, ladder, tmp_path / "on", self_check=SelfCheckConfig(True)).converse(
        "q"
    )
    assert res.tier == "haiku" and res.attempts[0].self_check["verdict"] == "pass"  # type: ignore[index]
    assert len(server.requests) == 2
    res = make(server, bedrock, ladder, tmp_path / "off").converse("q")
    assert res.attempts[0].self_check is None and len(server.requests) == 3


def test_max_escalations_caps_and_returns_failed_answer(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = script(ladder, Reply("I don't know."), Reply("I don't know either."))
    res = make(server, bedrock, ladder, tmp_path, max_escalations=1).converse("q")
    assert not res.ok and res.tiers_tried == ["haiku", "sonnet"]
    assert res.failure_reason == "refusal"
    rec = only_record(tmp_path)
    assert rec["stopped_by_max_escalations"] is True and rec["ok"] is False


def test_top_tier_failure_is_returned_not_raised(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = script(ladder, Reply(""), Reply(""))
    res = make(server, bedrock, ladder, tmp_path).converse("q")
    assert not res.ok and res.tiers_tried == ["haiku", "sonnet", "opus"]
    assert res.escalations == 2 and res.failure_reason == "empty"


def test_per_call_checks_and_answer_fields(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    seen: list[Answer] = []

    def spy(a: Answer) -> bool:
        seen.append(a)
        return a.tier != "haiku"

    server.responder = script(ladder, GOOD)
    res = make(server, bedrock, ladder, tmp_path).converse(
        "Explain X.", system="Be brief.", checks=[CallableCheck(spy, name="spy")]
    )
    assert res.tier == "sonnet"
    assert seen[0].prompt == "Be brief.\n\nExplain X." and seen[0].stop_reason == "end_turn"
    assert server.requests[0]["body"]["system"] == [{"text": "Be brief."}]
    assert json.loads(json.dumps(only_record(tmp_path)))["attempts"][0]["reason"] == "callable:spy"
