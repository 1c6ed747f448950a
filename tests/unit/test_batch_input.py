"""The routed batch input: every line validated, each error naming its line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.batch_input import BatchInputError, read_items


def _write(tmp_path: Path, *lines: object) -> Path:
    p = tmp_path / "in.jsonl"
    p.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return p


def test_prompts_and_message_lists_parse(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        {"id": "a", "prompt": "What is 2+2?"},
        "",
        {
            "id": "b",
            "system": "Be brief.",
            "max_tokens": 64,
            "tags": {"team": "x"},
            "messages": [
                {"role": "user", "content": [{"text": "Hi"}]},
                {"role": "assistant", "content": [{"text": "Hello"}]},
                {"role": "user", "content": [{"text": "Why?"}]},
            ],
        },
    )
    a, b = read_items(p)
    assert a.id == "a" and a.text == "What is 2+2?" and a.max_tokens is None
    assert b.max_tokens == 64 and b.tags == {"team": "x"} and b.request.system == "Be brief."
    assert b.text.startswith("Be brief.") and b.text.endswith("Why?")  # routed on it all


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ({"prompt": "no id"}, "field 'id'"),
        ({"id": "x"}, "exactly one of 'prompt' and 'messages'"),
        ({"id": "x", "prompt": "p", "messages": []}, "exactly one of"),
        ({"id": "x", "prompt": "  "}, "field 'prompt'"),
        ({"id": "x", "prompt": "p", "max_tokens": 0}, "field 'max_tokens'"),
        ({"id": "x", "prompt": "p", "colour": "red"}, "unknown field(s) ['colour']"),
        ({"id": "x", "messages": [{"role": "assistant", "content": [{"text": "a"}]}]}, "start"),
        ({"id": "x", "prompt": "p", "tags": {"a": 1}}, "field 'tags'"),
        ({"id": "a", "prompt": "again"}, "duplicate id 'a'"),
    ],
)
def test_a_bad_line_is_named_with_its_number(tmp_path: Path, bad: object, needle: str) -> None:
    p = _write(tmp_path, {"id": "a", "prompt": "fine"}, {"id": "b", "prompt": "fine"}, bad)
    with pytest.raises(BatchInputError) as e:
        read_items(p)
    assert f"{p}:3:" in str(e.value) and needle in str(e.value)


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError, match="no records"):
        read_items(_write(tmp_path, ""))
