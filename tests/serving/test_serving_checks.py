from __future__ import annotations

import pytest

from serving.checks import (
    Answer,
    CallableCheck,
    EmptyCheck,
    JsonSchemaCheck,
    RefusalCheck,
    RegexCheck,
    SelfCheckConfig,
    StopReasonCheck,
    parse_verdict,
)


def ans(text: str, stop: str = "end_turn") -> Answer:
    return Answer(text=text, stop_reason=stop, tier="haiku", model_id="m", prompt="q")


@pytest.mark.parametrize(
    "stop", ["max_tokens", "guardrail_intervened", "content_filtered", "malformed_model_output"]
)
def test_stop_reasons_escalate(stop: str) -> None:
    assert StopReasonCheck()(ans("fine", stop)) == f"stop_reason:{stop}"


@pytest.mark.parametrize("stop", ["end_turn", "stop_sequence", "tool_use"])
def test_normal_stop_reasons_pass(stop: str) -> None:
    assert StopReasonCheck()(ans("fine", stop)) is None


def test_empty() -> None:
    assert EmptyCheck()(ans("  \n ")) == "empty"
    assert EmptyCheck()(ans("x")) is None


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that request.",
        "I\u2019m sorry, I cannot assist with this.",
        "I cannot provide that information.",
        "I don't know.",
        "Honestly, I do not know the answer to this.",
        "I'm not sure which option is correct.",
        "I am not certain, but maybe B.",
        "As an AI, I cannot browse the internet.",
    ],
)
def test_refusals_and_dont_know(text: str) -> None:
    assert RefusalCheck()(ans(text)) == "refusal"


@pytest.mark.parametrize(
    "text",
    [
        "The answer is (B) because the integral converges.",
        "Sure, here is the summary you asked for.",
        "x" * 400 + " I don't know why people say otherwise.",  # beyond the window
    ],
)
def test_normal_answers_are_not_refusals(text: str) -> None:
    assert RefusalCheck()(ans(text)) is None


def test_regex_must_and_must_not_match() -> None:
    must = RegexCheck(r"Answer: [A-J]\b")
    assert must(ans("... Answer: C")) is None
    assert must(ans("no letter")) == "regex:no_match"
    forbid = RegexCheck(r"(?i)lorem ipsum", must_match=False, name="no_lorem")
    assert forbid(ans("Lorem Ipsum dolor")) == "no_lorem:forbidden_match"
    with pytest.raises(ValueError, match="invalid pattern"):
        RegexCheck("(")


def test_json_schema() -> None:
    schema = {
        "type": "object",
        "required": ["answer"],
        "properties": {"answer": {"type": "string", "enum": ["A", "B"]}},
    }
    check = JsonSchemaCheck(schema)
    assert check(ans('{"answer": "A"}')) is None
    assert check(ans('```json\n{"answer": "B"}\n```')) is None
    assert check(ans("answer A")) == "json_schema:not_json"
    assert check(ans('{"answer": "Z"}')) == "json_schema:invalid_at:answer"
    assert check(ans("{}")) == "json_schema:invalid_at:<root>"
    with pytest.raises(ValueError, match="invalid schema"):
        JsonSchemaCheck({"type": "not-a-type"})


def test_callable_results() -> None:
    assert CallableCheck(lambda a: True, name="t")(ans("x")) is None
    assert CallableCheck(lambda a: False, name="t")(ans("x")) == "callable:t"
    assert CallableCheck(lambda a: "too short", name="t")(ans("x")) == "callable:t:too short"


def test_verdict_parsing_and_rubric() -> None:
    assert parse_verdict("PASS") is True
    assert parse_verdict(" fail.") is False
    assert parse_verdict("maybe") is None
    rendered = SelfCheckConfig(enabled=True).render("Q?", "A!")
    assert "Q?" in rendered and "A!" in rendered
    with pytest.raises(ValueError):
        SelfCheckConfig(rubric="no placeholders")
