import gzip
import json
from pathlib import Path

import pytest

from outcomes import OutcomesError, read_outcomes, write_outcomes


def _write(p: Path, lines: list[str]) -> Path:
    p.write_text("\n".join(lines) + "\n")
    return p


def test_reads_plain_and_gzip_and_filters_split(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "prompt": "x", "split": "train", "results": {"m": {"score": 1}}},
        {
            "id": "b",
            "prompt": "y",
            "split": "test",
            "results": {"m": {"score": 0.2, "output_chars": 10}},
        },
    ]
    plain = _write(tmp_path / "o.jsonl", [json.dumps(r) for r in rows])
    gz = tmp_path / "o.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(plain.read_text())
    for p in (plain, gz):
        recs = read_outcomes(p)
        assert [r.id for r in recs] == ["a", "b"]
        assert [r.id for r in read_outcomes(p, "test")] == ["b"]
        assert recs[0].results["m"].passed and not recs[1].results["m"].passed
        assert recs[1].results["m"].output_chars == 10


def test_roundtrip(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "o.jsonl",
        [
            json.dumps(
                {
                    "id": "a",
                    "prompt": "x",
                    "task": "t",
                    "split": "train",
                    "source": "s",
                    "results": {"m": {"score": 1.0, "grader": "exact"}},
                }
            )
        ],
    )
    recs = read_outcomes(p)
    out = tmp_path / "copy.jsonl"
    write_outcomes(out, recs)
    assert read_outcomes(out) == recs


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "invalid JSON"),
        ('{"id": 1, "prompt": "x", "results": {}}', "'id' must be a string"),
        ('{"id": "a", "prompt": "x"}', "'results'"),
        ('{"id": "a", "prompt": "x", "results": {"m": {"score": 2}}}', "results['m'].score"),
        ('{"id": "a", "prompt": "x", "results": {"m": {"score": "nan"}}}', "finite number"),
        ('{"id": "a", "prompt": "x", "results": {"m": {}}}', "'score'"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, line: str, needle: str) -> None:
    good = '{"id": "ok", "prompt": "x", "results": {"m": {"score": 1}}}'
    p = _write(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(OutcomesError) as e:
        read_outcomes(p)
    assert f"{p}:2" in str(e.value) and needle in str(e.value)


def test_duplicate_ids_and_truncated_gzip(tmp_path: Path) -> None:
    row = '{"id": "a", "prompt": "x", "results": {"m": {"score": 1}}}'
    with pytest.raises(OutcomesError, match="duplicate id"):
        read_outcomes(_write(tmp_path / "dup.jsonl", [row, row]))
    gz = tmp_path / "t.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        for i in range(2000):
            f.write(row.replace('"a"', f'"{i}"') + "\n")
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(OutcomesError, match="unreadable"):
        read_outcomes(gz)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutcomesError, match="cannot open"):
        read_outcomes(tmp_path / "nope.jsonl")


def test_scores_just_outside_the_range_are_clipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # routerarena carries a judge score of -0.033; refusing the file would lose the run.
    lines = [
        '{"id": "a", "prompt": "x", "results": {"m": {"score": -0.033}, "n": {"score": 1.2}}}',
        '{"id": "b", "prompt": "y", "results": {"m": {"score": 0.7}}}',
    ]
    p = _write(tmp_path / "o.jsonl", lines)
    with caplog.at_level("WARNING", logger="outcomes"):
        recs = read_outcomes(p)
    assert [r.results["m"].score for r in recs] == [0.0, 0.7]
    assert recs[0].results["n"].score == 1.0 and recs[0].results["n"].passed
    assert not recs[0].results["m"].passed
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "2 score(s) outside [0, 1] clipped" in warned[0]
    assert f"{p}:1: results['m'].score=-0.033" in warned[0]
