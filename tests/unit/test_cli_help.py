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
