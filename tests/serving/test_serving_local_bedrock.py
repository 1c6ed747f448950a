"""The local Bedrock server's wire format, recorded answers and fault injection."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError
from serving_support import client_for

from fake_bedrock import FaultConfig, LocalBedrock, OutcomeIndex
from outcomes import ModelResult, OutcomeRecord
from router.ladder import Ladder


def records(ladder: Ladder) -> list[OutcomeRecord]:
    k = [t.outcomes_key for t in ladder.tiers]
    return [
        OutcomeRecord(
            "p1",
            "What is 2+2?",
            {
                k[0]: ModelResult(0.0, output_chars=400),
                k[1]: ModelResult(1.0, output_tokens=30),
                k[2]: ModelResult(1.0, output_chars=100_000),
            },
        )
    ]


def msg(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


@pytest.fixture
def recorded(ladder: Ladder):
    with LocalBedrock(ladder, OutcomeIndex(records(ladder), ladder)) as srv:
        yield srv


def test_answers_as_recorded(recorded: LocalBedrock, ladder: Ladder) -> None:
    c = client_for(recorded.url)
    h, s, o = (t.model_id for t in ladder.tiers)
    r = c.converse(modelId=h, messages=msg("What is 2+2?"), inferenceConfig={"maxTokens": 500})
    text = r["output"]["message"]["content"][0]["text"]
    assert len(text) == 400 and r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": 3, "outputTokens": 100, "totalTokens": 103}
    assert r["metrics"]["latencyMs"] >= 0 and r["output"]["message"]["role"] == "assistant"
    r = c.converse(modelId=s, messages=msg("What is 2+2?"), inferenceConfig={"maxTokens": 500})
    assert r["usage"]["outputTokens"] == 30
    r = c.converse(modelId=o, messages=msg("What is 2+2?"), inferenceConfig={"maxTokens": 64})
    assert r["stopReason"] == "max_tokens" and r["usage"]["outputTokens"] == 64
    # the verdict is not in the text; a validator that knows the record looks it up
    assert recorded.index.passed("What is 2+2?", h) is False
    assert recorded.index.passed("What is 2+2?", s) is True
    assert recorded.index.passed("unknown", s) is None


def test_unknown_prompt_gets_a_plausible_answer(recorded: LocalBedrock, ladder: Ladder) -> None:
    c = client_for(recorded.url)
    r = c.converse(modelId=ladder.tiers[0].model_id, messages=msg("Tell me about owls."))
    assert r["stopReason"] == "end_turn" and r["output"]["message"]["content"][0]["text"]


def test_unknown_model_is_a_validation_exception(recorded: LocalBedrock) -> None:
    with pytest.raises(ClientError) as e:
        client_for(recorded.url).converse(modelId="anthropic.nope", messages=msg("hi"))
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_error_wire_format(ladder: Ladder) -> None:
    with LocalBedrock(ladder, faults=FaultConfig(throttle_rate=1.0)) as srv:
        req = urllib.request.Request(
            f"{srv.url}/model/{ladder.tiers[0].model_id}/converse",
            data=json.dumps({"messages": msg("hi")}).encode(),
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 429
        assert e.value.headers["x-amzn-ErrorType"].startswith("ThrottlingException:")
        assert json.loads(e.value.read())["message"]
        with pytest.raises(ClientError) as ce:
            client_for(srv.url, max_attempts=2).converse(
                modelId=ladder.tiers[0].model_id, messages=msg("hi")
            )
        assert ce.value.response["Error"]["Code"] == "ThrottlingException"
        assert ce.value.response["ResponseMetadata"]["RetryAttempts"] == 1
        assert srv.stats["throttled"] == 3


def test_fault_rates_are_roughly_as_configured(ladder: Ladder) -> None:
    faults = FaultConfig(throttle_rate=0.2, error_rate=0.1, seed=7)
    with LocalBedrock(ladder, faults=faults) as srv:
        c = client_for(srv.url, max_attempts=1)
        outcomes: dict[str, int] = {}
        for _ in range(300):
            try:
                c.converse(modelId=ladder.tiers[0].model_id, messages=msg("hi"))
                code = "ok"
            except ClientError as e:
                code = e.response["Error"]["Code"]
            outcomes[code] = outcomes.get(code, 0) + 1
    assert 35 <= outcomes["ThrottlingException"] <= 85
    errors = outcomes.get("ServiceUnavailableException", 0) + outcomes.get(
        "InternalServerException", 0
    )
    assert 8 <= errors <= 45 and outcomes.get("InternalServerException", 0) > 0


def test_bad_requests(recorded: LocalBedrock) -> None:
    req = urllib.request.Request(f"{recorded.url}/model/x/converse", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400 and e.value.headers["x-amzn-ErrorType"].startswith("Validation")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{recorded.url}/models", timeout=5)
    assert e.value.code == 404


def test_fault_config_validation() -> None:
    with pytest.raises(ValueError, match="throttle_rate"):
        FaultConfig(throttle_rate=1.5)
