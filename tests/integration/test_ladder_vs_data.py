"""A ladder that does not fit the outcomes file is refused before any work (issue 23).

A typo in a tier's `outcomes_key` once trained with exit 0 into an always-top router
with a table of NaN; now `train` exits 2 naming the key, the ladder line and the
closest keys the file has, and writes no bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.ladder import Ladder
from tier_router.cli import main
from training.ladder_check import outcomes_key_lines


def _typo_ladder(src: Path, dst: Path, old: str, new: str) -> Path:
    text = src.read_text(encoding="utf-8")
    assert f'"{old}"' in text
    dst.write_text(text.replace(f'"{old}"', f'"{new}"'), encoding="utf-8")
    return dst


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_key_lines_follow_the_tables(small_ladder: Path) -> None:
    lines = outcomes_key_lines(small_ladder)
    ladder = Ladder.load(small_ladder)
    assert set(lines) == {"tier[0]", "tier[1]", "tier[2]"}
    for i, t in enumerate(ladder.tiers):
        assert lines[f"tier[{i}]"] == _line_of(small_ladder, f'"{t.outcomes_key}"')


def test_a_typo_in_outcomes_key_exits_2_naming_key_line_and_closest(
    small_outcomes: Path, small_ladder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _typo_ladder(
        small_ladder, tmp_path / "mine.toml", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-1160"
    )
    out = tmp_path / "bundle"
    rc = main(["train", "--outcomes", str(small_outcomes), "--ladder", str(bad), "--out", str(out),
               "--no-mlflow"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 2
    line = _line_of(bad, "gpt-3.5-turbo-1160")
    assert f"{bad}:{line}" in cap.err
    assert "'gpt-3.5-turbo-1160'" in cap.err and "tier 'sonnet'" in cap.err
    assert "closest keys in the file: 'gpt-3.5-turbo-1106'" in cap.err
    assert cap.out == ""  # stdout: one JSON document or nothing
    assert not out.exists()  # refused before any work
    assert "nan" not in cap.err.lower()


def test_a_second_opinion_key_is_checked_too(tmp_path: Path, shared_data: Path) -> None:
    from realdata import REPO

    from outcomes import read_outcomes
    from training.ladder_check import check_ladder_against

    sample = REPO / "data" / "sample" / "mmlu_pro_answers_sample.jsonl.gz"
    src = REPO / "data" / "ladders" / "mmlu_pro_answers.toml"
    bad = _typo_ladder(src, tmp_path / "l.toml", "gemini-1.5-flash-002", "gemini-1.5-flash")
    recs = read_outcomes(sample)[:50]
    with pytest.raises(ValueError) as e:
        check_ladder_against(Ladder.load(bad), bad, recs, sample)
    assert f"{bad}:{_line_of(bad, 'gemini-1.5-flash')}" in str(e.value)
    assert "second opinion" in str(e.value) and "'gemini-1.5-flash-002'" in str(e.value)
    check_ladder_against(Ladder.load(src), src, recs, sample)  # the shipped pair fits


def test_a_tier_without_train_results_is_an_error_not_a_nan_table(
    small_outcomes: Path, small_ladder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The middle tier's results kept only in the test split: the key exists in the file,
    # but training would have nothing to learn that tier from.
    rows = [json.loads(x) for x in small_outcomes.read_text().splitlines()]
    for r in rows:
        if r["split"] == "train":
            r["results"].pop("gpt-3.5-turbo-1106", None)
    data = tmp_path / "no_mid_in_train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "bundle"
    rc = main(["train", "--outcomes", str(data), "--tiers", str(small_ladder), "--out", str(out),
               "--no-mlflow"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 2
    assert "no training prompt has a result for" in cap.err
    assert f"{small_ladder}:{_line_of(small_ladder, 'gpt-3.5-turbo-1106')}" in cap.err
    assert "tier 'sonnet'" in cap.err
    assert not out.exists() and cap.out == ""
    assert "nan" not in cap.err.lower()


def test_evaluate_on_a_file_without_a_bundle_key_names_it(
    trained_bundle: Path, small_outcomes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [json.loads(x) for x in small_outcomes.read_text().splitlines()]
    for r in rows:
        r["results"]["gpt-4-preview"] = r["results"].pop("gpt-4-1106-preview", {"score": 0})
    data = tmp_path / "renamed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = main(["evaluate", "--bundle", str(trained_bundle), "--outcomes", str(data)])
    cap = capsys.readouterr()
    assert rc == 2
    assert "'gpt-4-1106-preview'" in cap.err and "'gpt-4-preview'" in cap.err
    assert "ladder.toml:" in cap.err
