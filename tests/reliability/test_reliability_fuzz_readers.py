"""Property and fuzz tests for every file reader: arbitrary bytes, truncated files, wrong
types and deep nesting. Each input gives valid data or the reader's own error naming
the file (and the line or field); none crashes with a stray exception or hangs.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from outcomes import OutcomeRecord, OutcomesError, iter_outcomes
from router.bundle import FORMAT_VERSION, BundleError, Manifest
from router.ladder import Ladder, LadderError
from serving.outcome_log import ReadStats, encode_record, read_log

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

VALID_RECORD: dict[str, Any] = {
    "id": "q1",
    "prompt": "What is 2 + 2?",
    "split": "train",
    "task": "math",
    "results": {
        "m-small": {"score": 1.0, "output_tokens": 12},
        "m-big": {"score": 0.0, "output_chars": 40},
    },
}


# Hypothesis runs hundreds of examples per test and cannot use tmp_path, so every input
# goes into one module directory that pytest's own temp retention cleans up.
_SCRATCH: list[Path] = []
_SEQ = itertools.count()


@pytest.fixture(autouse=True, scope="module")
def _scratch_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    _SCRATCH.append(tmp_path_factory.mktemp("fuzz-readers"))
    yield
    _SCRATCH.pop()


def _fresh_dir() -> Path:
    d = _SCRATCH[-1] / f"case{next(_SEQ)}"
    d.mkdir()
    return d


def _write(data: bytes) -> Path:
    p = _fresh_dir() / "input.jsonl"
    p.write_bytes(data)
    return p


def _names_file(err: Exception, path: Path) -> None:
    msg = str(err)
    assert msg.startswith(str(path)), msg
    assert len(msg) < 2000, "error messages stay readable on huge inputs"


# -- outcomes files ---------------------------------------------------------------------


def _outcomes_ok_or_error(p: Path) -> list[OutcomeRecord]:
    try:
        recs = list(iter_outcomes(p))
    except OutcomesError as e:
        _names_file(e, p)
        assert re.match(rf"^{re.escape(str(p))}(:\d+)?: ", str(e)), str(e)
        return []
    for r in recs:
        assert isinstance(r.id, str) and isinstance(r.prompt, str)
        assert all(0.0 <= m.score <= 1.0 for m in r.results.values())
    return recs


@FUZZ
@given(st.binary(max_size=4000))
@example(b"\x1f\x8b")  # a gzip magic with nothing after it
@example(b"\xff\xfe{}\n")
@example(b"{}\n" * 3)
def test_outcomes_arbitrary_bytes(data: bytes) -> None:
    _outcomes_ok_or_error(_write(data))


@FUZZ
@given(st.lists(json_values, min_size=1, max_size=5))
def test_outcomes_arbitrary_json_lines(values: list[Any]) -> None:
    data = "\n".join(json.dumps(v) for v in values).encode()
    _outcomes_ok_or_error(_write(data))


@FUZZ
@given(
    field=st.sampled_from(["id", "prompt", "results", "split", "task", "score", "output_tokens"]),
    value=json_values,
)
def test_outcomes_wrong_types_name_line_and_field(field: str, value: Any) -> None:
    rec = json.loads(json.dumps(VALID_RECORD))
    if field in ("score", "output_tokens"):
        rec["results"]["m-small"][field] = value
    else:
        rec[field] = value
    good = json.dumps({**VALID_RECORD, "id": "q0"})
    p = _write((good + "\n" + json.dumps(rec) + "\n").encode())
    try:
        list(iter_outcomes(p))
    except OutcomesError as e:
        assert f"{p}:2: " in str(e), "the error names the line"
        assert field in str(e) or "results" in str(e), "and the field"


@FUZZ
@given(cut=st.integers(min_value=0, max_value=10_000), gz=st.booleans())
def test_outcomes_truncated_anywhere(cut: int, gz: bool) -> None:
    lines = [json.dumps({**VALID_RECORD, "id": f"q{i}"}) for i in range(40)]
    data = ("\n".join(lines) + "\n").encode()
    if gz:
        data = gzip.compress(data)
    p = _write(data[: cut % (len(data) + 1)])
    recs = _outcomes_ok_or_error(p)
    assert [r.id for r in recs] == [f"q{i}" for i in range(len(recs))]


def test_outcomes_huge_line_is_bounded_and_clear() -> None:
    p = _write(b'{"id": "x", "prompt": "' + b"a" * 20_000_000 + b'"}\n')
    with pytest.raises(OutcomesError, match=rf"{re.escape(str(p))}:1: field 'results'"):
        list(iter_outcomes(p))
    p.unlink()  # 20 MB


def test_outcomes_deeply_nested_json_is_a_clear_error() -> None:
    p = _write(b"[" * 100_000 + b"\n")
    with pytest.raises(OutcomesError, match=rf"{re.escape(str(p))}:1: "):
        list(iter_outcomes(p))


def test_outcomes_corrupt_gzip_is_a_clear_error() -> None:
    good = gzip.compress(
        b"".join(encode_record({**VALID_RECORD, "id": f"q{i}"}) for i in range(50))
    )
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    p = _write(bytes(bad))
    with pytest.raises(OutcomesError, match=re.escape(str(p))):
        list(iter_outcomes(p))


# -- tier ladders -----------------------------------------------------------------------

LADDER_TEXT = (REPO / "data" / "ladders" / "mmlu_pro.toml").read_text(encoding="utf-8")


def _ladder_ok_or_error(p: Path) -> None:
    try:
        ladder = Ladder.load(p)
    except LadderError as e:
        _names_file(e, p)
        return
    assert len(ladder) >= 2 and len(set(ladder.names)) == len(ladder)


@FUZZ
@given(st.binary(max_size=3000))
def test_ladder_arbitrary_bytes(data: bytes) -> None:
    _ladder_ok_or_error(_write(data))


@FUZZ
@given(st.integers(min_value=0, max_value=len(LADDER_TEXT)))
def test_ladder_truncated_anywhere(cut: int) -> None:
    _ladder_ok_or_error(_write(LADDER_TEXT[:cut].encode()))


LADDER_FIELDS = (
    "name",
    "model_id",
    "outcomes_key",
    "price_in_per_mtok",
    "price_out_per_mtok",
    "max_tokens",
    "temperature",
    "top_p",
)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return repr(v)


@FUZZ
@given(
    field=st.sampled_from([*LADDER_FIELDS, "surprise"]),
    value=st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
)
def test_ladder_wrong_types_name_tier_and_field(field: str, value: Any) -> None:
    lines = [line for line in LADDER_TEXT.splitlines() if not line.strip().startswith(f"{field} =")]
    text = "\n".join(lines)
    if value is not None:
        text = text.replace("[[tier]]", f"[[tier]]\n{field} = {_toml(value)}", 1)
    p = _write(text.encode())
    try:
        Ladder.load(p)
    except LadderError as e:
        _names_file(e, p)
        named = (field, "tier names must be unique", "not valid TOML")
        assert any(n in str(e) for n in named), str(e)


@settings(deadline=None, max_examples=1)
@given(st.just(2_000))
def test_ladder_pathological_toml_fails_fast(depth: int) -> None:
    """tomllib is quadratic in dotted-key depth (2,000 levels ~0.6 s, 50,000 ~minutes)
    and recursive in array depth: a hostile ladder must be refused up front, before
    tomllib sees it (checked by the parser never being called, not by a clock)."""
    import tomllib
    from unittest import mock

    for text in ("a" + ".a" * depth + " = 1", "a = " + "[" * 100_000):
        p = _write(text.encode())
        parse = mock.Mock(side_effect=AssertionError("tomllib was handed a hostile ladder"))
        with (
            mock.patch.object(tomllib, "loads", parse),
            pytest.raises(LadderError, match=re.escape(str(p))),
        ):
            Ladder.load(p)
        assert parse.call_count == 0


# -- bundle manifests -------------------------------------------------------------------


def _manifest_dir(doc: bytes) -> Path:
    d = _fresh_dir()
    (d / "manifest.json").write_bytes(doc)
    return d


def _manifest_ok_or_error(d: Path) -> None:
    try:
        m = Manifest.read(d)
    except BundleError as e:
        _names_file(e, d)
        return
    assert m.files and m.router_version


@FUZZ
@given(st.binary(max_size=3000))
def test_manifest_arbitrary_bytes(data: bytes) -> None:
    _manifest_ok_or_error(_manifest_dir(data))


def _manifest(**changes: Any) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "router_version": "v1",
        "files": {"model.onnx": "0" * 64},
        **changes,
    }


@FUZZ
@given(
    field=st.sampled_from(["format_version", "router_version", "files", "files.entry"]),
    value=json_values,
    name=st.from_regex(r"\A[a-z][a-z0-9_-]{0,20}\.(json|onnx|npy)\Z"),
)
def test_manifest_wrong_types(field: str, value: Any, name: str) -> None:
    # Fuzzed file names are the next test's business (they currently lose the path).
    assume(not (field == "files" and isinstance(value, dict) and value))
    doc = _manifest()
    if field == "files.entry":
        doc["files"][name] = value
    else:
        doc[field] = value
    d = _manifest_dir(json.dumps(doc).encode())
    _manifest_ok_or_error(d)
    if field == "files.entry" and not isinstance(value, str):
        with pytest.raises(BundleError, match="is not a sha256"):
            Manifest.read(d)


@FUZZ
@given(name=st.text(max_size=40) | st.sampled_from(["../x.json", "/etc/passwd.json", "a/b.json"]))
def test_manifest_unsafe_names_are_refused_naming_the_file(name: str) -> None:
    d = _manifest_dir(json.dumps(_manifest(files={name: "0" * 64})).encode())
    _manifest_ok_or_error(d)


def test_manifest_deeply_nested_is_a_clear_error() -> None:
    d = _manifest_dir(
        f'{{"format_version": {FORMAT_VERSION}, "x": '.encode() + b"[" * 100_000 + b"}"
    )
    with pytest.raises(BundleError, match=re.escape(str(d))):
        Manifest.read(d)


# -- outcome logs -----------------------------------------------------------------------


def _read_all(p: Path) -> tuple[list[dict[str, Any]], ReadStats]:
    st_ = ReadStats()
    recs = list(read_log(p, st_))
    assert all(isinstance(r, dict) for r in recs)
    assert st_.records == len(recs)
    return recs, st_


@FUZZ
@given(st.binary(max_size=4000))
@example(b"[" * 50_000 + b"\n")  # deep nesting: a bad line, not a RecursionError
@example(b"\x1f\x8b\x08\x00")
def test_log_arbitrary_bytes_never_raises(data: bytes) -> None:
    recs, st_ = _read_all(_write(data))
    nonblank = sum(1 for line in data.split(b"\n") if line.strip())
    assert len(recs) + st_.bad_lines <= max(nonblank, 1)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=20_000), gz=st.booleans())
def test_log_truncated_keeps_every_whole_record(cut: int, gz: bool) -> None:
    lines = [encode_record({"request_id": f"r{i}", "ok": True, "n": i}) for i in range(200)]
    raw = b"".join(lines)
    data = gzip.compress(raw) if gz else raw
    data = data[: cut % (len(data) + 1)]
    recs, st_ = _read_all(_write(data))
    assert [r["n"] for r in recs] == list(range(len(recs))), "a prefix, in order"
    if not gz:
        whole = data.count(b"\n")  # + 1 when the cut falls just before a newline
        assert whole <= len(recs) <= whole + 1, "every complete line survives a torn tail"
    assert st_.bad_lines <= 1


def test_log_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.jsonl"))):
        list(read_log(tmp_path / "nope.jsonl"))
