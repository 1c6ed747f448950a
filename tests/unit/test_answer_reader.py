"""The answer reader: every reply format services ask for, agreement by meaning, unknown
never read as a disagreement, robustness on real answers re-rendered, bounded work."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest
from realdata import require_shared

from router.answer_features import agreement, final_answer, prompt_options
from router.answer_reader import read_final, same_answer, states_answer
from training.answer_formats import FORMATS, Reread, render, reread_row


def key(text: str, options: str = "") -> str | None:
    found = read_final(text, options)
    return None if found is None else found.key


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # JSON and JSON-like objects: the answer field, not the reasoning's numbers.
        ('{"reasoning": "3 + 5 = 8 apples, then 8 * 60 = 480", "answer": "480"}', "number:480"),
        ('{"reasoning": "...", "answer": 480}', "number:480"),
        ('```json\n{\n  "reasoning": "She has 3.\nThen 5 more = 8.",\n  "answer": "$480"\n}\n```',
         "number:480"),
        ("{'reasoning': 'a', 'answer': 'Paris'}", "text:paris"),
        ('{"reasoning": "x",\n "answer": "12",\n}', "number:12"),
        ('{"answer": "6", "reasoning": "The \\"answer\\": 5 is wrong"}', "number:6"),
        ('{"reasoning": "r", "final_answer": "7", "result": "3"}', "number:7"),
        # LaTeX, written with JSON escapes or (invalidly) without them.
        ('{"reasoning": "x", "answer": "\\\\frac{1}{2}"}', "number:0.5"),
        ('{"reasoning": "x", "answer": "\\frac{1}{2}"}', "number:0.5"),
        ('{"reasoning": "x", "answer": "\\boxed{3\\sqrt{2}}"}', "number:4.24264"),
        ("The answer is $\\boxed{\\dfrac{1}{2}}$.", "number:0.5"),
        ("so \\boxed{x^2 + 1}", "math:x^2+1"),
        ("\\boxed{\\{3, 1\\}}", "math:\\{1,3\\}"),
        # Tags, markers, ####, bold.
        ("Work...\n<answer>1/2</answer>", "number:0.5"),
        ("Work...\n#### 1,234", "number:1234"),
        ("It takes 1 hour.\nFinal Answer: 1 hour", "number:1"),
        ("Final answer: 94%", "number:94"),
        ("The answer is twenty-one.", "number:21"),
        ("Therefore the answer is 18 because she earns 3 per day.", "number:18"),
        ("10 gallons cost $30.00, minus $2.00 cashback: **$28.00**", "number:28"),
        ("The mass is 3.2 \\times 10^{-7} kg.\nAnswer: 3.2 \\times 10^{-7}", "number:3.2e-07"),
        ("Final answer:\n\n$-2.50$", "number:-2.5"),
        ("#### 24 2/3", "number:24.6667"),
        ("İstanbul: the answer is 42", "number:42"),  # lower() lengthens İ
        # An answer field that is a sentence: its own marker, or its one number.
        ('{"reasoning": "r", "answer": "The answer is 18"}', "number:18"),
        ('{"reasoning": "r", "answer": "She earns $18 per day"}', "number:18"),
        ('{"reasoning": "r", "answer": "18, since 3 * 6 = 18"}', "number:18"),
        # Code and literal outputs.
        ('{"reasoning": "...", "answer": [1, 2, 3]}', "literal:[1,2,3]"),
        ('{"reasoning": "...", "answer": "(1, 2, 3)"}', "literal:[1,2,3]"),
        ('{"reasoning": "...", "answer": "\'bcksrut\'"}', "text:bcksrut"),
        ('{"reasoning": "...", "answer": true}', "literal:True"),
        ('{"reasoning": "...", "answer": "True"}', "literal:True"),
        ("{\"answer\": \"{'b': 2, 'a': 1}\"}", "literal:{'a':1,'b':2}"),
        ("None", "literal:None"),
        # Short free text, and the last number of a worked answer.
        ("Vitamin C.", "text:vitamin c"),
        ("6 + 5 + 10 + 8 = 29 quarts of strawberries per hour on the farm.", "number:29"),
    ],
)
def test_formats(reply: str, expected: str) -> None:
    assert key(reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is (F). The answer is (F).", "choice:F"),
        ('{"reasoning": "B is wrong", "answer": "C"}', "choice:C"),
        ('{"reasoning": "...", "answer": "(D) 0.32 uC"}', "choice:D"),
        ("**Answer: B**", "choice:B"),
        ("The correct option is C.", "choice:C"),
        ("I think it is option A", "choice:A"),
        ("\\boxed{E}", "choice:E"),
        ("<answer>Option B</answer>", "choice:B"),
        ("I am not sure which one applies.", None),
        ('{"answer": "Q"}', None),  # not one of the listed options
    ],
)
def test_choice_letters(reply: str, expected: str | None) -> None:
    assert key(reply, "ABCDEFG") == expected


def test_equal_values_in_other_forms_agree_and_different_ones_do_not() -> None:
    same = [
        ("\\boxed{\\frac{1}{2}}", '{"answer": "0.5"}'),
        ("Answer: 1/2", "<answer>\\dfrac12</answer>"),
        ("#### $1,200", '{"answer": 1200.0}'),
        ("Final answer: 480 dollars", '{"answer": "$480"}'),
        ('{"answer": "\'abc\'"}', '{"answer": "abc"}'),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "Answer: \\frac{\\sqrt3}{2}"),
        ("Answer: [1, 2]", '{"answer": [1, 2]}'),
    ]
    for a, b in same:
        assert same_answer(read_final(a), read_final(b)) is True, (a, b)
        assert agreement(final_answer(a, ""), final_answer(b, "")) == (1.0, 1.0)
    for a, b in [("#### 12", "#### 13"), ("Answer: [1, 2]", "Answer: [2, 1]"),
                 ("Answer: True", "Answer: False")]:
        assert same_answer(read_final(a), read_final(b)) is False, (a, b)
        assert agreement(final_answer(a, ""), final_answer(b, "")) == (1.0, 0.0)


def test_a_long_reply_is_read_at_its_end_or_at_its_start() -> None:
    reasoning = "Step. " * 20_000
    assert key(reasoning + "\nThe answer is 5.") == "number:5"
    assert key('{"answer": "7", "reasoning": "' + reasoning + '"}') == "number:7"


def test_an_unreadable_answer_is_unknown_never_a_disagreement() -> None:
    essay = (
        "Supply chains in the 1990s were shaped by deregulation, containerisation and new "
        "information systems, and each of those had consequences that played out unevenly "
        "across industries and regions, which is why historians still argue about them."
    )
    assert read_final(essay) is None
    assert same_answer(read_final(essay), read_final("#### 5")) is None
    assert agreement(final_answer(essay, ""), final_answer("#### 5", "")) == (0.0, 0.0)
    assert read_final("") is None and read_final("   \n") is None


def test_a_stated_but_unreadable_answer_is_told_apart_from_no_answer() -> None:
    stated = (
        "Final answer: it depends on several factors, none of which this short essay can "
        "settle with any confidence today"
    )
    assert read_final(stated) is None and states_answer(stated)
    assert not states_answer("A long essay with no stated answer at all, just discussion.")


def rows(name: str, n: int) -> Iterator[dict]:
    with gzip.open(require_shared(name), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                return
            yield json.loads(line)


@pytest.mark.parametrize("name", ["mmlu_pro_answers.jsonl.gz", "gsm8k_answers.jsonl.gz"])
def test_real_answers_re_rendered_read_the_same(name: str) -> None:
    """Each real answer restated in every format reads as the same canonical answer."""
    counts = Reread()
    for r in rows(name, 400):
        reread_row(r, counts)
    assert counts.readable / counts.answers > 0.9
    for fmt in FORMATS:
        assert counts.share(fmt) >= 0.99, (fmt, counts.same[fmt], counts.readable)


def test_json_replies_still_agree_with_the_second_opinion_as_often() -> None:
    """On the real mmlu_pro ladder, the cheap tier's agreement with the second opinion (and
    how often an agreement is right) is the same whether both reply in prose or in JSON."""
    cheap, second = "Meta-Llama-3.1-8B-Instruct", "gemini-1.5-flash-002"
    plain = as_json = right_plain = right_json = 0
    for r in rows("mmlu_pro_answers.jsonl.gz", 600):
        res, opts = r["results"], prompt_options(r["prompt"])
        a, b = res[cheap]["answer"], res[second]["answer"]
        fa, fb = read_final(a, opts), read_final(b, opts)
        agree = bool(same_answer(fa, fb))
        ja = render(a, fa.value if fa else "", "json_fenced_raw")
        jb = render(b, fb.value if fb else "", "json")
        agree_json = bool(same_answer(read_final(ja, opts), read_final(jb, opts)))
        plain += agree
        as_json += agree_json
        right_plain += agree and res[cheap]["score"] >= 0.5
        right_json += agree_json and res[cheap]["score"] >= 0.5
    assert plain > 200 and as_json == plain and right_json == right_plain


@pytest.mark.parametrize(
    "text",
    [
        "```{" * 8000,
        '"answer": "' * 9000,
        "[" * 100_000,
        "\\boxed{" * 14_000,
        "answer is " * 10_000,
        "\n" * 100_000,
        "{" + '"answer": ' * 5000 + "}",
        "\ud800 broken surrogate \x00\x01 control \u202e bidi ### ####",
        "1" * 50_000,
        "**" * 40_000,
        "<answer>" * 10_000,
    ],
)
def test_hostile_replies_give_an_answer_or_none_never_an_error(text: str) -> None:
    for options in ("", "ABCD"):
        found = read_final(text, options)
        assert found is None or (isinstance(found.value, str) and len(found.value) < 5000)
