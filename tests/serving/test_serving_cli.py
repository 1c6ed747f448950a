"""Argument validation (exit 2, the bad flag named) and the local-bedrock command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from serving_support import REPO, client_for

from router.ladder import Ladder
from tier_router.serving_cli import register

TIERS = REPO / "data" / "ladders" / "mmlu_pro.toml"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tier-router")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def outcomes(tmp_path: Path) -> Path:
    p = tmp_path / "o.jsonl"
    keys = ["Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct", "gpt-4o-2024-05-13"]
    rec = {
        "id": "a",
        "prompt": "What is 2+2?",
        "split": "test",
        "results": {k: {"score": 1.0, "output_chars": 40} for k in keys},
    }
    p.write_text(json.dumps(rec) + "\n")
    return p


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["local-bedrock", "--outcomes", "nope.jsonl", "--ladder", str(TIERS)], "--outcomes"),
        (["local-bedrock", "--outcomes", "{o}", "--ladder", "nope.toml"], "--ladder"),
        (
            ["local-bedrock", "--outcomes", "{o}", "--ladder", str(TIERS), "--port", "70000"],
            "--port",
        ),
        (
            ["local-bedrock", "--outcomes", "{o}", "--ladder", str(TIERS), "--throttle-rate", "2"],
            "--throttle-rate",
        ),
        (
            ["local-bedrock", "--outcomes", "{o}", "--ladder", str(TIERS), "--latency-ms", "-1"],
            "--latency-ms",
        ),
        (["demo", "--bundle", "no-such-dir", "--outcomes", "{o}"], "--bundle"),
        (["demo", "--bundle", ".", "--outcomes", "{o}", "--requests", "0"], "--requests"),
        (["demo", "--bundle", ".", "--outcomes", "{o}", "--error-rate", "x"], "--error-rate"),
        (["demo", "--bundle", ".", "--outcomes", "{o}", "--log", "{o}"], "--log"),
        (["feedback", "--log", "nope", "--ladder", str(TIERS), "--out", "x"], "--log"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(
    argv: list[str], flag: str, outcomes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        parse([a.replace("{o}", str(outcomes)) for a in argv])
    assert e.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_invalid_file_contents_exit_2(
    tmp_path: Path, outcomes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_tiers = tmp_path / "t.toml"
    bad_tiers.write_text("[[tier]]\nname = 'x'\n")
    args = parse(["local-bedrock", "--outcomes", str(outcomes), "--ladder", str(bad_tiers)])
    assert args.func(args) == 2
    assert "--ladder" in capsys.readouterr().err
    bad_outcomes = tmp_path / "bad.jsonl"
    bad_outcomes.write_text('{"id": 1}\n')
    args = parse(["local-bedrock", "--outcomes", str(bad_outcomes), "--ladder", str(TIERS)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "--outcomes" in err and "bad.jsonl:1" in err
    args = parse(
        [
            "feedback",
            "--log",
            str(outcomes),
            "--ladder",
            str(TIERS),
            "--out",
            str(tmp_path / "missing" / "x.jsonl"),
        ]
    )
    assert args.func(args) == 2
    assert "--out" in capsys.readouterr().err


def test_demo_without_a_loadable_bundle_exits_2(
    tmp_path: Path, outcomes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["demo", "--bundle", str(tmp_path), "--outcomes", str(outcomes)])
    assert args.func(args) == 2
    assert "--bundle" in capsys.readouterr().err


LAUNCH = """
import argparse, sys
from router.ladder import Ladder
from tier_router.serving_cli import register
p = argparse.ArgumentParser(prog="tier-router")
register(p.add_subparsers(dest="command", required=True))
a = p.parse_args(sys.argv[1:])
sys.exit(a.func(a))
"""


def test_local_bedrock_command_serves_until_terminated(outcomes: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "local-bedrock",
            "--outcomes",
            str(outcomes),
            "--ladder",
            str(TIERS),
            "--port",
            "0",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["prompts"] == 1
        r = client_for(info["url"]).converse(
            modelId=Ladder.load(TIERS).tiers[0].model_id,
            messages=[{"role": "user", "content": [{"text": "What is 2+2?"}]}],
        )
        assert len(r["output"]["message"]["content"][0]["text"]) == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
