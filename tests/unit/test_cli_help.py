"""`--help` documents every flag of every command, with its default where it has one."""

from __future__ import annotations

import argparse

import pytest

from tier_router.cli import build_parser


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    out = {"tier-router": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update({f"tier-router {k}": v for k, v in action.choices.items()})
    return out


def has_default_to_show(action: argparse.Action) -> bool:
    d = action.default
    return not (d is None or isinstance(d, bool) or d in ((), [], "") or d is argparse.SUPPRESS)


def test_every_command_is_walked() -> None:
    names = set(commands())
    assert {"tier-router train", "tier-router evaluate", "tier-router label"} <= names
    assert {"tier-router local-bedrock", "tier-router demo", "tier-router retrain"} <= names


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_flag_has_help_and_shows_its_default(name: str) -> None:
    parser = commands()[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings:
            continue
        flag = max(action.option_strings, key=len)
        assert action.help and action.help.strip(), f"{name} {flag} has no help text"
        shown = formatter._expand_help(action)  # the text --help prints for the flag
        if has_default_to_show(action):
            assert "default" in shown.lower(), f"{name} {flag}: --help hides its default"
    parser.format_help()  # every help string formats (no stray % signs)


def test_old_flag_names_parse_to_the_new_ones_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One name per thing (`--ladder`, `--log`, `--eval-split`); the old spellings still
    work and say on stderr which name to use."""
    f = __file__
    parser = build_parser()
    old = parser.parse_args(["retrain", "--outcomes", f, "--feedback", f, "--tiers", f,
                             "--split", "dev"])  # fmt: skip
    err = capsys.readouterr().err
    new = parser.parse_args(["retrain", "--outcomes", f, "--log", f, "--ladder", f,
                             "--eval-split", "dev"])  # fmt: skip
    assert capsys.readouterr().err == ""
    for a in (old, new):
        assert [str(x) for x in a.log] == [f] and str(a.tiers) == f and a.eval_split == "dev"
    for was, now in (("--feedback", "--log"), ("--tiers", "--ladder"), ("--split", "--eval-split")):
        assert f"tier-router retrain: warning: {was} is deprecated; use {now}" in err
    t = parser.parse_args(["train", "--outcomes", f, "--tiers", f, "--out", "o"])
    assert str(t.tiers) == f and "--tiers is deprecated" in capsys.readouterr().err
    for name in ("train", "feedback", "label", "local-bedrock", "retrain"):
        assert "--ladder" in commands()[f"tier-router {name}"].format_help()
