"""Batch record bodies per model family, and reading their answers back."""

from __future__ import annotations

from fake_bedrock.translate import (
    anthropic_to_converse,
    converse_to_anthropic,
    converse_to_nova,
    nova_to_converse,
)
from router.ladder import Tier
from serving.batch_jobs import answer_of, job_name, model_input, record_id, rid_of

CLAUDE = Tier("c", "us.anthropic.claude-3-haiku-20240307-v1:0", "k", 0.25, 1.25, 512, 0.2)
NOVA = Tier("n", "amazon.nova-micro-v1:0", "k2", 0.035, 0.14, 256)
MESSAGES = [{"role": "user", "content": [{"text": "What is 2+2?"}]}]
RESPONSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "4"}]}},
    "stopReason": "max_tokens",
    "usage": {"inputTokens": 7, "outputTokens": 3},
}


def test_claude_records_are_anthropic_messages_bodies() -> None:
    body = model_input(MESSAGES, CLAUDE, "Be brief.", max_tokens=2000)
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert body["max_tokens"] == 512 and body["temperature"] == 0.2  # capped at the tier's
    assert body["system"] == "Be brief." and body["messages"][0]["content"][0]["type"] == "text"
    conv = anthropic_to_converse(body)
    assert conv["messages"][0]["content"] == [{"text": "What is 2+2?"}]
    assert answer_of(converse_to_anthropic(RESPONSE, CLAUDE.model_id)) == ("4", "max_tokens", 7, 3)


def test_nova_records_use_the_messages_v1_schema() -> None:
    body = model_input(MESSAGES, NOVA, "Be brief.", max_tokens=100)
    assert body["schemaVersion"] == "messages-v1" and "anthropic_version" not in body
    assert body["inferenceConfig"] == {"maxTokens": 100}
    assert body["system"] == [{"text": "Be brief."}]
    conv = nova_to_converse(body)
    assert conv["messages"] == MESSAGES and conv["inferenceConfig"] == {"maxTokens": 100}
    assert answer_of(converse_to_nova(RESPONSE)) == ("4", "max_tokens", 7, 3)


def test_record_ids_and_job_names() -> None:
    assert rid_of(record_id(42)) == 42 and rid_of("R12") is None and rid_of("x0000000001") is None
    name = job_name("route", "abc123", "r1", "second/opinion", "p0")
    assert name == "route-abc123-r1-second-opinion-p0"
    assert len(job_name("x" * 80)) == 63
    assert answer_of(None) is None and answer_of({"content": []}) == ("", "", 0, 0)
