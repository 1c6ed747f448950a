"""The typed outcome record: what the client writes parses back to the same JSON, older
records read with defaults, non-records are refused, and the labeling rules hold."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from serving_support import client_for

from router.ladder import Ladder
from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage, encode_record
from serving.outcome_record import AttemptRecord, NotAnOutcomeRecord, OutcomeLogRecord
from serving.routing import FixedTierRouter
from serving.tiered_client import TieredClient, TieredClientConfig, TieredClientError
from training.log_labels import (
    SKIP_NO_LABELS,
    SKIP_PROMPT_DROPPED,
    SKIP_PROMPT_HASHED,
    SKIP_STICKY,
    labels_of,
)


def written(bedrock: Any, ladder: Ladder, path: Path, **cfg: Any) -> list[dict[str, Any]]:
    """Real client records: plain, explored, a sticky second turn and a stream. The text
    is opted in (`store`): these tests read the labelling rules on text records."""
    cfg.setdefault("prompt_storage", PromptStorage.STORE)
    config = TieredClientConfig(exploration_rate=0.5, seed=1, **cfg)
    client = TieredClient(
        FixedTierRouter(ladder, 1), bedrock, OutcomeLogger([JsonlSink(path)]), config
    )
    for q in ("What is 2 + 2?", "Name a prime number above 10."):
        client.converse(q)
    client.converse("first turn", conversation_id="c")
    client.converse("second turn", conversation_id="c")
    list(client.converse_stream("Stream a short answer."))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_written_records_round_trip_exactly(bedrock: Any, ladder: Ladder, tmp_path: Path) -> None:
    raw = written(bedrock, ladder, tmp_path / "log.jsonl")
    assert len(raw) == 5 and raw[3]["sticky"] is True and "stream" in raw[4]
    for r in raw:
        rec = OutcomeLogRecord.from_dict(r)
        assert rec.to_dict() == r
        assert encode_record(rec.to_dict()) == encode_record(r)  # same keys in the same order
        assert all(isinstance(a, AttemptRecord) for a in rec.attempts)
    rec = OutcomeLogRecord.from_dict(raw[0])
    assert rec.decision is not None and rec.decision.tier == ladder.names[1]
    assert rec.prompt_text == "What is 2 + 2?"
    assert 0 < rec.propensity < 1  # exploration was on: the coin's probability is logged


def test_older_records_read_with_defaults(bedrock: Any, ladder: Ladder, tmp_path: Path) -> None:
    raw = written(bedrock, ladder, tmp_path / "log.jsonl")[0]
    keep = ("request_id", "time", "prompt")
    old = {k: raw[k] for k in keep}
    old["attempts"] = [
        {k: a[k] for k in ("tier", "model_id", "role", "outcome", "usage")} for a in raw["attempts"]
    ]
    rec = OutcomeLogRecord.from_dict(old)
    assert rec.decision is None and rec.exploration is None and rec.stream is None
    assert rec.sticky is False and rec.escalations == 0 and rec.propensity == 1.0
    assert rec.attempts[0].cost_usd is None and rec.attempts[0].answer is None
    new, was = labels_of(OutcomeLogRecord.from_dict(raw), ladder), labels_of(rec, ladder)
    assert was.skipped is None and set(was.results) == set(new.results)
    assert [r.score for r in was.results.values()] == [r.score for r in new.results.values()]


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        ([], "expected a JSON object"),
        ({"attempts": []}, "request_id"),
        ({"request_id": "r"}, "attempts"),
        ({"request_id": "r", "attempts": [], "schema": "other/1"}, "schema"),
        ({"request_id": "r", "attempts": [], "sticky": "yes"}, "sticky"),
        ({"request_id": "r", "attempts": [], "escalations": True}, "escalations"),
        ({"request_id": "r", "attempts": ["passed"]}, "attempt"),
        ({"request_id": "r", "attempts": [{"tier": 3}]}, "tier"),
    ],
)
def test_non_records_are_refused_with_the_reason(obj: Any, why: str) -> None:
    with pytest.raises(NotAnOutcomeRecord, match=why):
        OutcomeLogRecord.from_dict(obj)


def test_labeling_rules(bedrock: Any, ladder: Ladder, tmp_path: Path) -> None:
    rec = OutcomeLogRecord.from_dict(written(bedrock, ladder, tmp_path / "log.jsonl")[0])
    tier = ladder.tiers[0]
    a = AttemptRecord(
        tier.name,
        tier.model_id,
        "decided",
        "passed",
        "ok",
        usage={"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7},
        cost_usd=0.001,
        answer={"storage": "store", "text": "four"},
    )
    up = ladder.tiers[1]
    attempts = (
        dataclasses.replace(a, outcome="failed"),
        dataclasses.replace(a, tier=up.name, model_id=up.model_id, outcome="rejected"),
        dataclasses.replace(a, tier=up.name, model_id="some-fallback-model"),
        dataclasses.replace(
            a, tier=ladder.tiers[2].name, model_id=ladder.tiers[2].model_id, outcome="unavailable"
        ),
    )
    lab = labels_of(dataclasses.replace(rec, attempts=attempts), ladder)
    assert lab.skipped is None and list(lab.results) == [tier.outcomes_key]
    got = lab.results[tier.outcomes_key]
    assert got.score == 0.0 and got.input_tokens == 15.0 and got.output_tokens == 7.0
    assert got.extra == {
        "reason": "ok", "answer": "four", "label_source": "check", "role": "decided", "attempt": 0
    }
    assert got.cost_usd == 0.001
    assert lab.unlabelled == 3 and lab.verdicts == ((tier.name, False),)

    assert labels_of(dataclasses.replace(rec, sticky=True), ladder).skipped == SKIP_STICKY
    hashed = {"storage": PromptStorage.HASH.value, "sha256": "00", "chars": 3}
    assert labels_of(dataclasses.replace(rec, prompt=hashed), ladder).skipped == (
        SKIP_PROMPT_HASHED
    )
    assert labels_of(dataclasses.replace(rec, prompt={}), ladder).skipped == SKIP_PROMPT_DROPPED
    only_errors = (dataclasses.replace(a, outcome="error"),)
    none = labels_of(dataclasses.replace(rec, attempts=only_errors), ladder)
    assert none.skipped == SKIP_NO_LABELS and none.unlabelled == 1


def test_client_error_still_writes_a_parseable_record(
    server: Any, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    for t in ladder.tiers:  # every tier down: nothing answers
        server.outage(t.model_id, 600)
    path = tmp_path / "log.jsonl"
    client = TieredClient(
        FixedTierRouter(ladder, 0),
        client_for(server.url, max_attempts=1),
        OutcomeLogger([JsonlSink(path)]),
    )
    with pytest.raises(TieredClientError):
        client.converse("anything")
    (raw,) = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rec = OutcomeLogRecord.from_dict(raw)
    assert rec.to_dict() == raw and rec.final_tier is None and rec.failure_reason == "no_answer"
    assert labels_of(rec, ladder).skipped == SKIP_NO_LABELS
