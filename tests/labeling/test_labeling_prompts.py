"""The prompts file reader and the on-demand checkpoint: errors name file:line:field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_labeling_support import read_some

from labeling.config import LabelConfig
from labeling.graders import ChoiceGrader, GraderSet
from labeling.ondemand import validate_prompts
from labeling.prompts import PromptsError, iter_prompts
from labeling.store import OutcomeAppender
from outcomes import ModelResult, OutcomeRecord, OutcomesError


def write(tmp_path: Path, *lines: str) -> Path:
    p = tmp_path / "p.jsonl"
    p.write_text("".join(line + "\n" for line in lines))
    return p


def test_prompt_and_messages_forms(tmp_path: Path) -> None:
    rec = read_some("mmlu_pro.jsonl.gz", 1)[0]
    conv = [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"text": rec["prompt"]}]},
    ]
    p = write(
        tmp_path,
        json.dumps({"id": rec["id"], "prompt": rec["prompt"], "task": rec["task"]}),
        "",
        json.dumps({"id": 7, "messages": conv, "reference": "C", "split": "test"}),
    )
    a, b = list(iter_prompts(p))
    assert a.text == rec["prompt"] and a.task == rec["task"] and not a.multi_turn
    assert b.id == "7" and b.text == rec["prompt"] and b.multi_turn and b.where == f"{p}:3"
    assert b.messages[1] == {"role": "assistant", "content": [{"text": "Hello."}]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"prompt": "x"}', "field 'id' must be a non-empty string"),
        ('{"id": "a"}', "exactly one of 'prompt' or 'messages'"),
        ('{"id": "a", "prompt": "x", "messages": []}', "exactly one of"),
        ('{"id": "a", "prompt": "  "}', "field 'prompt' must be a non-empty string"),
        ('{"id": "a", "messages": [{"role": "bot", "content": "x"}]}', "messages[0].role"),
        (
            '{"id": "a", "messages": [{"role": "user", "content": [{"image": 1}]}]}',
            "messages[0].content[0]: only",
        ),
        (
            '{"id": "a", "messages": [{"role": "user", "content": "x"}, '
            '{"role": "assistant", "content": "y"}]}',
            "start and end with a user turn",
        ),
        ('{"id": "a", "prompt": "x", "task": 3}', "field 'task' must be a string"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    p = write(tmp_path, '{"id": "ok", "prompt": "fine"}', line)
    with pytest.raises(PromptsError) as e:
        list(iter_prompts(p))
    assert str(e.value).startswith(f"{p}:2: ") and message in str(e.value)


def test_validation_catches_duplicates_and_ungradable_prompts(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '{"id": "a", "prompt": "x", "reference": "A"}',
        '{"id": "a", "prompt": "y", "reference": "B"}',
    )
    with pytest.raises(PromptsError, match=r":2: field 'id': duplicate id 'a'"):
        validate_prompts(LabelConfig(p, tmp_path / "o.jsonl"), GraderSet(ChoiceGrader()))
    p = write(tmp_path, '{"id": "a", "prompt": "x"}')
    with pytest.raises(PromptsError, match=r":1: field 'reference': grader 'choice'"):
        validate_prompts(LabelConfig(p, tmp_path / "o.jsonl"), GraderSet(ChoiceGrader()))
    with pytest.raises(PromptsError, match="cannot open"):
        list(iter_prompts(tmp_path / "missing.jsonl"))


def test_checkpoint_cuts_a_torn_line_and_refuses_a_corrupt_one(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    app = OutcomeAppender(out)
    assert app.load_done() == set()
    for i in range(3):
        app.append(OutcomeRecord(f"p{i}", "q", {"m": ModelResult(1.0)}))
    app.close()
    with out.open("a") as f:
        f.write('{"id": "p3", "prompt": "q", "res')
    assert OutcomeAppender(out).load_done() == {"p0", "p1", "p2"}
    assert out.read_text().endswith("}\n")
    with out.open("a") as f:
        f.write("garbage\n")
    with pytest.raises(OutcomesError, match=r"o.jsonl:4: invalid JSON \(not a torn last line"):
        OutcomeAppender(out).load_done()
    with pytest.raises(ValueError, match=r"plain \.jsonl"):
        OutcomeAppender(tmp_path / "o.jsonl.gz")
