"""Every grader on real prompts from ../shared/data, with hand-checked gold answers.

The data records pass/fail but not gold answers, so the gold here is worked out by
hand for a few prompts (arithmetic, well-known facts); the answers are written the
way models answer these benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_labeling_support import aws_for, judge_responder, read_some

from labeling.answers import ModelAnswer
from labeling.clients import runtime_client
from labeling.graders import (
    ChoiceGrader,
    ExactGrader,
    GradeError,
    GraderSet,
    JsonSchemaGrader,
    JudgeConfig,
    JudgeGrader,
    NumericGrader,
    RegexGrader,
    parse_grader_spec,
    parse_judge_reply,
)
from labeling.prompts import PromptItem, PromptsError, parse_prompt

# Gold worked out by hand for real prompts.
GSM8K_GOLD = {
    "routellm/gsm8k/001e2190dc11f3ab": 320,  # 20 + 60 + 40 + 2*(60+40)
    "routellm/gsm8k/0034d757745b7b67": 540,  # 2*150 + 240 seconds
    "routellm/gsm8k/00565657cc3d3341": 60,  # 18/3 * 10 minutes
    "routellm/gsm8k/006045a1b4cff5d3": 25,  # 60 - 15 - 20 miles
    "routellm/gsm8k/00c56239c310f454": 9,  # (21 - 3) / 2
    "routellm/gsm8k/0183f714f945111a": 28,  # 10 * (3.00 - 0.20) dollars
}
TRIVIA_GOLD = {
    "llmrouter_dcrouter/02a0517f2a86725b": "vitamin C",
    "llmrouter_dcrouter/00fcd7d34bdc64e8": "Rho",
    "llmrouter_dcrouter/02547ef61e1c0f42": "Nevil Shute",
    "llmrouter_dcrouter/035ac9fd47314a75": "Lohengrin",
}
MMLU_CAR = "mmlu_pro/100"  # $3,462.20 over 35 months = $98.92 -> option E


def by_id(name: str, ids: set[str], task: str | None = None) -> dict[str, dict[str, Any]]:
    recs = read_some(
        name, len(ids), lambda r: r["id"] in ids and (task is None or r["task"] == task)
    )
    assert {r["id"] for r in recs} == ids
    return {r["id"]: r for r in recs}


def item(rec: dict[str, Any], reference: Any) -> PromptItem:
    return parse_prompt({"id": rec["id"], "prompt": rec["prompt"], "reference": reference}, "t:1")


def ans(text: str) -> ModelAnswer:
    return ModelAnswer(text, "end_turn", 100, 50)


def test_numeric_on_gsm8k() -> None:
    recs = by_id("routellm.jsonl.gz", set(GSM8K_GOLD), "gsm8k")
    g = NumericGrader()
    elaine = item(recs["routellm/gsm8k/001e2190dc11f3ab"], "#### 320")
    good = (
        "First month: 3 * 20 = 60. Second: 60 - 20 = 40. Third: 2 * (60 + 40) = 200.\n"
        "Total 20 + 60 + 40 + 200 = 320.\n#### 320"
    )
    assert g.grade(elaine, ans(good)).score == 1.0
    bad = g.grade(elaine, ans("She collected 60 + 40 + 200 = 300 cards.\nThe answer is 300."))
    assert bad.score == 0.0 and bad.reason == "expected 320, got 300"
    gas = item(
        recs["routellm/gsm8k/0183f714f945111a"], GSM8K_GOLD["routellm/gsm8k/0183f714f945111a"]
    )
    assert g.grade(gas, ans("10 gallons cost $30.00, minus $2.00 cashback: **$28.00**")).passed
    assert not g.grade(gas, ans("The total is $30.00")).passed
    for pid, gold in GSM8K_GOLD.items():
        it = item(recs[pid], gold)
        assert g.grade(it, ans(f"Working it out step by step.\nThe answer is {gold:,}.")).passed
        assert not g.grade(it, ans(f"Working it out.\nThe answer is {gold + 1}.")).passed
    loose = parse_grader_spec("numeric:0.01")
    assert loose.grade(gas, ans("About 28.2 dollars")).passed
    assert not NumericGrader().grade(gas, ans("no idea")).passed


def test_choice_on_mmlu_pro() -> None:
    rec = by_id("mmlu_pro.jsonl.gz", {MMLU_CAR})[MMLU_CAR]
    it = item(rec, "E")
    g = ChoiceGrader()
    cot = "$3,462.20 / 35 = $98.92 per month, which is option E.\nThe answer is (E)."
    assert g.grade(it, ans(cot)).score == 1.0
    v = g.grade(it, ans("Dividing gives about $100.\nThe answer is (A)."))
    assert v.score == 0.0 and v.reason == "expected E, got A"
    assert g.grade(it, ans("Answer: E")).passed
    assert g.grade(it, ans("E")).passed
    assert not g.grade(it, ans("I am not sure which one applies.")).passed
    assert g.check(item(rec, "42")) is not None


def test_exact_on_trivia() -> None:
    recs = by_id("llmrouter_dcrouter.jsonl.gz", set(TRIVIA_GOLD))
    g = ExactGrader()
    scurvy = item(recs["llmrouter_dcrouter/02a0517f2a86725b"], "vitamin C")
    assert g.grade(scurvy, ans("Vitamin C.")).passed
    assert g.grade(
        scurvy, ans("Scurvy is caused by a lack of ascorbic acid.\nAnswer: Vitamin C")
    ).passed
    assert not g.grade(scurvy, ans("Answer: vitamin D")).passed
    shute = item(recs["llmrouter_dcrouter/02547ef61e1c0f42"], "Nevil Shute")
    assert g.grade(shute, ans("The answer is: Nevil Shute.")).passed
    assert not g.grade(
        shute, ans("Both novels were written by Nevil Shute, an English author.")
    ).passed


def test_regex_on_mbpp() -> None:
    rec = read_some("llmrouter_dcrouter.jsonl.gz", 1, lambda r: r["task"] == "mbpp")[0]
    code = "```python\ndef lps(s):\n    n = len(s)\n    return n\n```"
    own = RegexGrader(r"def \w+\(")
    assert own.grade(item(rec, None), ans(code)).passed
    assert not own.grade(item(rec, None), ans("Use dynamic programming over substrings.")).passed
    by_ref = RegexGrader()
    assert by_ref.check(item(rec, r"return\s+n")) is None
    assert by_ref.grade(item(rec, r"return\s+n"), ans(code)).passed
    assert by_ref.check(item(rec, "(")) is not None
    with pytest.raises(ValueError, match="invalid pattern"):
        parse_grader_spec("regex:(")


SCHEMA = {
    "type": "object",
    "required": ["answer", "explanation"],
    "properties": {"answer": {"enum": list("ABCDEFGHIJ")}, "explanation": {"type": "string"}},
}


def test_json_schema_on_mmlu_pro(tmp_path: Path) -> None:
    rec = by_id("mmlu_pro.jsonl.gz", {MMLU_CAR})[MMLU_CAR]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    g = parse_grader_spec(f"json_schema:{path}")
    it = item(rec, None)
    fenced = 'Here you go:\n```json\n{"answer": "E", "explanation": "3462.20 / 35 = 98.92"}\n```'
    assert g.grade(it, ans(fenced)).passed
    assert g.grade(it, ans('{"answer": "E", "explanation": "x"}')).passed
    v = g.grade(it, ans('Result: {"answer": "K", "explanation": "x"} done'))
    assert not v.passed and v.reason.startswith("invalid at answer")
    assert not g.grade(it, ans('{"answer": "E", "expl')).passed
    per_prompt = JsonSchemaGrader()
    assert per_prompt.check(item(rec, SCHEMA)) is None
    assert per_prompt.check(item(rec, {"type": 5})) is not None
    assert per_prompt.grade(item(rec, SCHEMA), ans(fenced)).passed


def test_judge_over_converse(start_server: Any, s3_url: str, ladder: Any) -> None:
    rec = by_id("mmlu_pro.jsonl.gz", {MMLU_CAR})[MMLU_CAR]
    srv = start_server([], responder=judge_responder)
    srv.keep_requests = True
    judge_tier = ladder.tiers[1]
    cfg = JudgeConfig(
        judge_tier.model_id, judge_tier.price_in_per_mtok, judge_tier.price_out_per_mtok
    )
    g = JudgeGrader(cfg, runtime_client(aws_for(srv, s3_url)))
    it = item(rec, "E")
    good = g.grade(it, ans("So $98.92.\nAnswer: E"))
    assert good.score == 0.9 and good.reason == "matches the reference."
    usage = srv.requests[-1]
    sent = usage["body"]["messages"][0]["content"][0]["text"]
    assert rec["prompt"] in sent and "<reference>\nE\n</reference>" in sent
    assert usage["modelId"] == judge_tier.model_id
    assert good.cost_usd > 0  # counted at the judge's price
    bad = g.grade(it, ans("Answer: B"))
    assert bad.score == pytest.approx(0.1) and not bad.passed


def test_judge_reply_parsing() -> None:
    assert parse_judge_reply("REASON: fine\nSCORE: 7") == (0.7, "fine")
    assert parse_judge_reply("score = 10/10")[0] == 1.0
    with pytest.raises(GradeError, match="no 'SCORE"):
        parse_judge_reply("Looks right to me.")
    with pytest.raises(GradeError, match="outside"):
        parse_judge_reply("SCORE: 11")


def test_grader_specs_and_task_overrides() -> None:
    with pytest.raises(ValueError, match="unknown grader"):
        parse_grader_spec("bleu")
    with pytest.raises(ValueError, match="judge model"):
        parse_grader_spec("judge")
    with pytest.raises(ValueError, match="numeric:REL_TOL"):
        parse_grader_spec("numeric:x")
    gs = GraderSet(ChoiceGrader(), {"gsm8k": NumericGrader()})
    math_item = parse_prompt({"id": "1", "prompt": "2+2?", "task": "gsm8k", "reference": 4}, "p:3")
    assert gs.for_item(math_item).name == "numeric"
    gs.check(math_item)
    bad = parse_prompt({"id": "2", "prompt": "Pick", "task": "law", "reference": 4}, "p:7")
    with pytest.raises(PromptsError, match=r"^p:7: field 'reference': grader 'choice' needs"):
        gs.check(bad)
