"""Outcome logs -> an outcomes file that the training side reads unchanged."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from serving_support import REPO

from fake_bedrock import ErrorReply, LocalBedrock, Reply
from outcomes import read_outcomes
from router.ladder import Ladder
from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage
from serving.routing import FixedTierRouter
from serving.tiered_client import TieredClient, TieredClientConfig
from tier_router.serving_cli import register

TIERS = REPO / "data" / "ladders" / "mmlu_pro.toml"


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tier-router")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def exploring_client(ladder: Ladder, bedrock: Any, log: Path, tier: int, seed: int) -> TieredClient:
    """Routes every request to `tier`, explores half of them and logs each to `log`, with
    the text opted in (`feedback` writes prompts; a features log is `retrain`'s)."""
    return TieredClient(
        FixedTierRouter(ladder, tier),
        bedrock,
        OutcomeLogger([JsonlSink(log)]),
        TieredClientConfig(exploration_rate=0.5, seed=seed, prompt_storage=PromptStorage.STORE),
    )


@pytest.fixture
def logged(server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path) -> Path:
    """A log with: pass on haiku; haiku refuses -> sonnet passes; haiku throttled ->
    sonnet passes; all fail; and a hashed-prompt record."""
    haiku, sonnet = ladder.tiers[0].model_id, ladder.tiers[1].model_id

    def responder(model_id: str, body: Mapping[str, Any]) -> Reply | ErrorReply:
        q = body["messages"][-1]["content"][0]["text"]
        if q == "easy":
            return Reply("Easy answer.")
        if q == "medium":
            return Reply("I don't know.") if model_id == haiku else Reply("Medium answer.")
        if q == "busy":
            if model_id == haiku:
                return ErrorReply(429, "ThrottlingException", "slow down")
            return Reply("Busy answer.")
        return Reply("")  # "impossible": every tier fails

    server.responder = responder
    path = tmp_path / "log.jsonl"
    logger = OutcomeLogger([JsonlSink(path)])
    store = TieredClientConfig(prompt_storage=PromptStorage.STORE)  # feedback needs the text
    client = TieredClient(FixedTierRouter(ladder, 0), bedrock, logger, store)
    for q in ("easy", "medium", "busy", "impossible"):
        client.converse(q)
    hashed = TieredClient(
        FixedTierRouter(ladder, 0),
        bedrock,
        logger,
        TieredClientConfig(prompt_storage=PromptStorage.HASH, prompt_hash_key=b"k" * 32),
    )
    hashed.converse("easy")
    assert sonnet  # both tiers were reachable
    return path


def test_labels_only_what_was_observed(logged: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "fb.jsonl"
    assert (
        run_cli(["feedback", "--log", str(logged), "--ladder", str(TIERS), "--out", str(out)]) == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == 4 and summary["skipped_prompt_hashed"] == 1
    recs = {r.prompt: r for r in read_outcomes(out)}
    ladder = Ladder.load(TIERS)
    k = [t.outcomes_key for t in ladder.tiers]
    assert {m: v.score for m, v in recs["easy"].results.items()} == {k[0]: 1.0}
    assert {m: v.score for m, v in recs["medium"].results.items()} == {k[0]: 0.0, k[1]: 1.0}
    # throttling says nothing about quality: haiku stays unknown
    assert {m: v.score for m, v in recs["busy"].results.items()} == {k[1]: 1.0}
    assert {m: v.score for m, v in recs["impossible"].results.items()} == {
        k[0]: 0.0,
        k[1]: 0.0,
        k[2]: 0.0,
    }
    assert all(r.split == "train" for r in recs.values())
    # The answer travels with its label, so the next verifier trains on it.
    assert recs["medium"].results[k[0]].extra == {
        "reason": "refusal", "answer": "I don't know.", "label_source": "check", "role": "decided",
        "attempt": 0,
    }
    assert summary["labels"]["haiku"] == {"pass": 1, "fail": 2}


def test_exploration_propensity_is_carried(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = lambda m, b: Reply("fine")
    log = tmp_path / "log.jsonl"
    client = exploring_client(ladder, bedrock, log, tier=2, seed=1)
    for i in range(6):
        client.converse(f"q{i}")
    out = tmp_path / "fb.jsonl.gz"
    assert run_cli(["feedback", "--log", str(log), "--ladder", str(TIERS), "--out", str(out)]) == 0
    for r in read_outcomes(out):
        e = r.extra["exploration"]
        assert e["propensity"] in (0.5,) and isinstance(e["explored"], bool)


def test_torn_and_duplicate_records_are_counted(logged: Path, tmp_path: Path, capsys: Any) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(logged.read_bytes() + b'{"request_id": "torn')
    out = tmp_path / "fb.jsonl"
    argv = ["feedback", "--log", str(logged), str(copy), "--ladder", str(TIERS), "--out", str(out)]
    assert run_cli(argv) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["written"] == 4 and s["skipped_duplicate"] == 5 and s["bad_lines"] == 1


def test_sticky_turns_are_not_labels(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path, capsys: Any
) -> None:
    """A sticky turn starts where the last turn ended (after an escalation, a tier the
    router did not pick), so it is kept out of the labels and claims no propensity."""
    haiku = ladder.tiers[0].model_id
    server.responder = lambda m, b: Reply("I don't know.") if m == haiku else Reply("Fine.")
    log = tmp_path / "log.jsonl"
    client = exploring_client(ladder, bedrock, log, tier=1, seed=3)
    turns = ("first turn", "second turn", "third turn")
    for q in turns:
        client.converse(q, conversation_id="c1")
    raw = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["sticky"] for r in raw] == [False, True, True]
    out = tmp_path / "fb.jsonl"
    assert run_cli(["feedback", "--log", str(log), "--ladder", str(TIERS), "--out", str(out)]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["written"] == 1 and s["skipped_sticky"] == 2
    assert [r.prompt for r in read_outcomes(out)] == ["first turn"]

    from training.retrain import MergeStats, feedback_records

    st = MergeStats()
    rows = list(feedback_records([log], ladder, "first-attempt", set(), st))
    assert [r.prompt for r in rows] == ["first turn"]
    assert st.dropped_per_reason() == {"sticky_turn": 2}
