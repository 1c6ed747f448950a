"""Hostile input to the runtime and the CLI parsers: any string gets a valid decision,
any wrong type a TypeError naming the argument, any argv a parse or a usage error."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import Decision, Router
from router.text_features import MAX_SCAN
from tier_router.cli import build_parser, main

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Every code point, lone surrogates and control characters included.
any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=300)


@pytest.fixture(scope="module")
def router(trained_bundle: Path) -> Router:
    return Router.load(trained_bundle)


def _valid(d: Decision, r: Router) -> None:
    assert d.tier in r.ladder.names and r.ladder.names[d.tier_index] == d.tier
    assert list(d.p_pass) == r.ladder.names
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in d.p_pass.values())
    assert d.router_version == r.version
    assert d.tier_index == r.policy.choose_one(list(d.p_pass.values()))


@FUZZ
@given(text=any_text)
def test_route_any_text_gives_a_valid_decision(router: Router, text: str) -> None:
    d = router.route(text)
    _valid(d, router)
    b = router.route_batch([text, "padding row that is longer than most of the fuzzed ones"])[0]
    assert b.tier == d.tier
    for k in d.p_pass:  # batching (padding) does not change a prompt's scores
        assert abs(b.p_pass[k] - d.p_pass[k]) < 1e-5


@FUZZ
@given(texts=st.lists(any_text, max_size=12))
def test_route_batch_any_list(router: Router, texts: list[str]) -> None:
    out = router.route_batch(texts)
    assert len(out) == len(texts)
    for d in out:
        _valid(d, router)


@pytest.mark.parametrize(
    "text",
    [
        "x" * 20_000_000,
        "word " * 2_000_000,
        "\U0001f600" * 200_000,
        "e\u0301" * 200_000,
        "\x00" * 100_000,
    ],
    ids=["20M-chars", "2M-words", "emoji", "combining", "nul"],
)
def test_huge_inputs_are_bounded(router: Router, text: str) -> None:
    """Featurization reads a bounded window, not O(len(text)): the decision does not
    depend on the middle of a huge prompt, and routing it allocates a small fraction of
    the prompt's size (counted by tracemalloc, not timed)."""
    d = router.route(text)
    _valid(d, router)
    _valid(router.route_batch([text])[0], router)
    cfg = router.featurizer.config
    lead, tail = max(MAX_SCAN, cfg.head_chars), cfg.tail_chars
    middle = len(text) - lead - tail
    assert middle > 0
    other = text[:lead] + ("q" if text[lead] != "q" else "z") * middle + text[-tail:]
    assert router.route(other).p_pass == d.p_pass
    assert router.route_batch([other])[0].p_pass == router.route_batch([text])[0].p_pass
    tracemalloc.start()
    try:
        router.route(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # About 20-75 KB here, whatever the prompt's size; a copy of the prompt would be more.
    assert peak < min(sys.getsizeof(text) // 2, 256 << 10), f"route() allocated {peak} B"


@FUZZ
@given(
    bad=st.none()
    | st.integers()
    | st.floats()
    | st.binary(max_size=10)
    | st.lists(st.integers(), max_size=2)
)
def test_wrong_types_are_type_errors_naming_the_argument(router: Router, bad: object) -> None:
    with pytest.raises(TypeError, match="text must be a str"):
        router.route(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        router.route_batch(["fine", bad])  # type: ignore[list-item]
    if not isinstance(bad, list | bytes):
        with pytest.raises(TypeError):
            router.route_batch(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [b"", {"a prompt": 1}], ids=["empty-bytes", "dict"])
def test_route_batch_refuses_bytes_and_mappings(router: Router, bad: object) -> None:
    """Today b"" routes nothing and a dict routes its keys, silently."""
    with pytest.raises(TypeError, match="list of str"):
        router.route_batch(bad)  # type: ignore[arg-type]


# -- CLI parsers --------------------------------------------------------------------------

PARSER = build_parser()
COMMANDS = sorted(
    next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices
)
FLAGS = [
    "--outcomes",
    "--ladder",
    "--out",
    "--bundle",
    "--split",
    "--featurizer",
    "--goal",
    "--clusters",
    "--folds",
    "--max-train",
    "--seed",
    "--temperature",
    "--port",
    "--throttle-rate",
    "--latency-ms",
    "--requests",
    "--log",
    "--max-attempts",
    "-v",
    "-",
    "--",
]
token = (
    st.sampled_from(FLAGS)
    | st.sampled_from(["0", "-1", "nan", "inf", "1e309", "2,3", "/dev/null", ".", "a" * 200])
    | st.text(max_size=15)
)


@FUZZ
@given(command=st.sampled_from(COMMANDS), args=st.lists(token, max_size=8))
def test_cli_parser_any_argv_parses_or_exits_2(command: str, args: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            ns = build_parser().parse_args([command, *args])
        except SystemExit as e:
            assert e.code in (0, 2), e.code
            if e.code == 2:
                assert "error:" in err.getvalue()
            return
    assert ns.command == command and callable(ns.func)


SERVING_COMMANDS = ["local-bedrock", "demo", "feedback"]
LONG = "a" * 5000  # ENAMETOOLONG: Path.is_file() raises OSError instead of returning False


@pytest.mark.parametrize(("command", "flag"), [("demo", "--bundle"), ("feedback", "--log")])
def test_serving_parsers_treat_unusable_paths_as_usage_errors(command: str, flag: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, flag, LONG])
    assert e.value.code == 2 and f"argument {flag}" in err.getvalue()


@pytest.mark.parametrize(
    ("command", "flag"), [("route", "--bundle"), ("score", "--outcomes"), ("compare", "--outcomes")]
)
def test_core_parsers_treat_unusable_paths_as_usage_errors(command: str, flag: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, flag, LONG])
    assert e.value.code == 2 and f"argument {flag}" in err.getvalue()


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".tar.gz", ".zip", ""]))
def test_cli_route_with_garbage_bundle_exits_2_naming_it(data: bytes, suffix: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fuzz-cli-") as d:
        bundle = Path(d) / f"bundle{suffix}"
        bundle.write_bytes(data)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["route", "--bundle", str(bundle), "hello"])
    assert rc == 2
    assert "tier-router route: error:" in err.getvalue() and str(bundle) in err.getvalue()
