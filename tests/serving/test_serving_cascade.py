"""The tiered client runs the bundle's cascade through real boto3 against the local server,
which answers with the recorded models' real answer texts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from serving_support import client_for

from fake_bedrock import FaultConfig, LocalBedrock, OutcomeIndex, recorded_output_tokens
from outcomes import read_outcomes
from router import Router
from serving.metrics import iter_windows
from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage, read_log
from serving.tiered_client import REJECTED, TieredClient, TieredClientConfig
from training.replay import replay_records


@pytest.fixture(scope="module")
def cascade_router(cascade_train) -> Router:
    return Router.load(cascade_train.bundle)


@pytest.fixture(scope="module")
def test_records(cascade_router, answers_slice):
    ladder = cascade_router.ladder
    recs = read_outcomes(answers_slice, "test")
    # Answers that fit every tier's max_tokens come back whole, as replay reads them.
    return [
        r
        for r in recs
        if all(
            recorded_output_tokens(r.results[t.outcomes_key]) <= t.max_tokens
            for t in (*ladder.tiers, ladder.second_opinion)
        )
    ][:80]


def _client(router, server, log: Path, **cfg) -> tuple[TieredClient, OutcomeLogger]:
    logger = OutcomeLogger([JsonlSink(log)])
    return TieredClient(router, client_for(server.url), logger, TieredClientConfig(**cfg)), logger


def test_serving_makes_the_calls_replay_makes(cascade_router, test_records, tmp_path) -> None:
    """Same walk, same answers: every request calls the models the replay says, in order,
    returns the same answer, and logs every call with its verdict and the answer text."""
    ladder = cascade_router.ladder
    by_model = {t.model_id: t.outcomes_key for t in (*ladder.tiers, ladder.second_opinion)}
    expected = {
        ln.id: ln for ln in replay_records(cascade_router, test_records) if ln.point == "policy"
    }
    with LocalBedrock(ladder, OutcomeIndex(test_records, ladder)) as server:
        client, logger = _client(
            cascade_router, server, tmp_path / "log.jsonl", prompt_storage=PromptStorage.STORE
        )  # the answer texts opted in: the verifier retrains from them
        for rec in test_records:
            res = client.converse(rec.prompt, request_id=rec.id)
            want = expected[rec.id]
            assert [by_model[a.model_id] for a in res.attempts] == want.calls, rec.id
            assert by_model[res.model_id] == want.final
            assert res.cost_usd == pytest.approx(sum(a.cost_usd for a in res.attempts))
        logger.close()
    records = list(read_log(tmp_path / "log.jsonl"))
    assert len(records) == len(test_records)
    rejected = second = explored = 0
    kinds: Counter = Counter()
    for r in records:
        assert r["cascade"]["point"] == "policy"
        for a in r["attempts"]:
            assert a["answer"]["storage"] == "store" and isinstance(a["answer"]["text"], str)
            if a["role"] == "second_opinion":
                second += 1
                assert a["outcome"] == "answered"
                continue
            if a["role"] == "explore_next":  # after the walk, never judged (exploration)
                explored += 1
                assert a["verdict"] == {"kind": "unjudged", "signal": "exploration"}
                assert r["cascade"]["explore"]["explored"] is True
                continue
            assert "verifier" in a and a["verifier"]["reason"].startswith("verifier p=")
            kinds[a["verifier"]["answer_kind"]] += 1
            if a["outcome"] == REJECTED:
                rejected += 1
                assert "<" in a["reason"] and a["verifier"]["verdict"] == "escalate"
    assert rejected > 0 and second > 0  # the slice exercises both
    # The log says what the reader made of each judged answer: choice letters, here; and
    # monitor's windows report the readable share per tier from it.
    assert kinds["choice"] > 0.8 * sum(kinds.values())
    (window,) = list(iter_windows(records, window_requests=len(records)))
    readable = window.summary(cascade_router.ladder.names)["answers_readable"]
    assert any(readable.values()) and all(v is None or v > 0.8 for v in readable.values())


def test_answers_follow_the_prompt_storage_setting(cascade_router, test_records, tmp_path) -> None:
    ladder = cascade_router.ladder
    with LocalBedrock(ladder, OutcomeIndex(test_records, ladder)) as server:
        client, logger = _client(
            cascade_router,
            server,
            tmp_path / "log.jsonl",
            prompt_storage=PromptStorage.HASH,
            prompt_hash_key=b"k",
        )
        client.converse(test_records[0].prompt)
        logger.close()
    raw = (tmp_path / "log.jsonl").read_text()
    answer = test_records[0].results[ladder.tiers[0].outcomes_key].extra["answer"]
    assert answer.strip()[:40] not in raw
    (rec,) = [json.loads(x) for x in raw.splitlines()]
    assert all(a["answer"]["storage"] == "hash" for a in rec["attempts"])


def test_cascade_survives_throttling_and_logs_every_request(
    cascade_router, test_records, tmp_path
) -> None:
    ladder = cascade_router.ladder
    faults = FaultConfig(throttle_rate=0.2, seed=3)
    with LocalBedrock(ladder, OutcomeIndex(test_records, ladder), faults) as server:
        logger = OutcomeLogger([JsonlSink(tmp_path / "log.jsonl")])
        client = TieredClient(
            cascade_router, client_for(server.url, max_attempts=6), logger, TieredClientConfig()
        )
        answered = [client.converse(r.prompt) for r in test_records[:40]]
        logger.close()
        assert server.stats["throttled"] > 0
    assert len(answered) == 40
    assert len(list(read_log(tmp_path / "log.jsonl"))) == 40


def test_cascade_off_routes_as_before(cascade_router, test_records, tmp_path) -> None:
    ladder = cascade_router.ladder
    with LocalBedrock(ladder, OutcomeIndex(test_records, ladder)) as server:
        client, logger = _client(cascade_router, server, tmp_path / "log.jsonl", cascade=False)
        res = client.converse(test_records[0].prompt)
        logger.close()
    assert res.attempts[0].tier == res.decision.tier
    assert all(a.verifier is None for a in res.attempts)


def test_unknown_cascade_point_is_a_clear_error(cascade_router, tmp_path) -> None:
    with pytest.raises(ValueError, match="cascade_point 'nope' is not in the bundle"):
        TieredClient(cascade_router, None, None, TieredClientConfig(cascade_point="nope"))


def test_cascade_exploration_runs_after_the_response_and_is_logged(
    cascade_router, test_records, tmp_path
) -> None:
    """At rate 1 every answer the verifier accepted below the top is also answered by the
    next tier: not on the caller's response (its calls are the replay's), but in the record,
    unjudged, with the rate the label rule weights by. Closing the log first still writes
    every record (the client drains its exploration calls before the sinks close)."""
    ladder = cascade_router.ladder
    expected = {
        ln.id: ln for ln in replay_records(cascade_router, test_records) if ln.point == "policy"
    }
    by_model = {t.model_id: t.outcomes_key for t in (*ladder.tiers, ladder.second_opinion)}
    with LocalBedrock(ladder, OutcomeIndex(test_records, ladder)) as server:
        client, logger = _client(
            cascade_router, server, tmp_path / "log.jsonl", cascade_explore_rate=1.0
        )
        for rec in test_records:
            res = client.converse(rec.prompt, request_id=rec.id)
            assert [by_model[a.model_id] for a in res.attempts] == expected[rec.id].calls
        logger.close()  # before client.close(): the explored records must still land
    records = {r["request_id"]: r for r in read_log(tmp_path / "log.jsonl")}
    assert sorted(records) == sorted(r.id for r in test_records)
    explored = 0
    for rid, r in records.items():
        block = r["cascade"]["explore"]
        assert block["rate"] == 1.0
        final = ladder.names.index(r["final_tier"])
        accepted = [a for a in r["attempts"] if a["tier"] == r["final_tier"]][-1]["verdict"]
        if final < len(ladder) - 1 and accepted["signal"] in ("verifier", "agreement"):
            explored += 1
            assert block == {"rate": 1.0, "explored": True, "tier": ladder.names[final + 1]}
            last = r["attempts"][-1]
            assert last["role"] == "explore_next" and last["tier"] == ladder.names[final + 1]
            assert last["verdict"] == {"kind": "unjudged", "signal": "exploration"}
            assert r["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in r["attempts"]))
            assert len(r["attempts"]) == len(expected[rid].calls) + 1
        else:
            assert block == {"rate": 1.0, "explored": False}
            assert len(r["attempts"]) == len(expected[rid].calls)
    assert explored > 0
    # Off: no exploration block, no extra call.
    with LocalBedrock(ladder, OutcomeIndex(test_records, ladder)) as server:
        client, logger = _client(
            cascade_router, server, tmp_path / "off.jsonl", cascade_explore_rate=0.0
        )
        for rec in test_records[:10]:
            client.converse(rec.prompt, request_id=rec.id)
        client.close()
        logger.close()
    for r in read_log(tmp_path / "off.jsonl"):
        assert "explore" not in r["cascade"]
        assert len(r["attempts"]) == len(expected[r["request_id"]].calls)


def test_a_failing_exploration_call_still_logs_the_record(
    cascade_router, test_records, tmp_path, monkeypatch
) -> None:
    """The exploration call runs after the caller has its answer; if it raises, the record
    is written all the same, without the call and saying why."""
    ladder = cascade_router.ladder
    with LocalBedrock(ladder, OutcomeIndex(test_records, ladder)) as server:
        client, logger = _client(
            cascade_router, server, tmp_path / "log.jsonl", cascade_explore_rate=1.0
        )
        real = client._caller.attempt

        def attempt(tier, idx, role, *args, **kw):  # type: ignore[no-untyped-def]
            if role == "explore_next":
                raise RuntimeError("explore broke")
            return real(tier, idx, role, *args, **kw)

        monkeypatch.setattr(client._caller, "attempt", attempt)
        for rec in test_records[:30]:
            client.converse(rec.prompt, request_id=rec.id)
        client.close()
        logger.close()
    records = list(read_log(tmp_path / "log.jsonl"))
    assert len(records) == 30
    broke = [r for r in records if r["cascade"]["explore"]["explored"]]
    assert broke and all(r["cascade"]["explore"]["error"] == "RuntimeError: explore broke"
                         for r in broke)  # fmt: skip
    assert not any(a["role"] == "explore_next" for r in records for a in r["attempts"])
