"""The outcome log: record contents, prompt storage, crash safety, exploration."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from fake_bedrock import LocalBedrock, Reply
from router.decision import Decision
from router.ladder import Ladder
from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage, ReadStats, read_log
from serving.routing import FixedTierRouter
from serving.tiered_client import TieredClient, TieredClientConfig

REPO = Path(__file__).resolve().parents[2]


class ScoredRouter:
    version = "scored/7"

    def __init__(self, ladder: Ladder, tier: int) -> None:
        self.ladder, self.tier = ladder, tier

    def route(self, text: str) -> Decision:
        t = self.ladder.tiers[self.tier]
        p = {"haiku": 0.31, "sonnet": 0.74, "opus": 0.9}
        return Decision(t.name, self.tier, t.model_id, t.max_tokens, p, self.version)


def test_record_is_written_before_return_with_everything(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    haiku = ladder.tiers[0].model_id
    server.responder = lambda m, b: Reply("I'm not sure.") if m == haiku else Reply("42.")
    path = tmp_path / "log.jsonl"
    client = TieredClient(
        ScoredRouter(ladder, 0),
        bedrock,
        OutcomeLogger([JsonlSink(path)]),
        TieredClientConfig(tags={"team": "search", "environment": "prod"}),
    )
    res = client.converse("What is 6*7?", tags={"workload": "qa"}, request_id="r-1")
    rec = json.loads(path.read_text().splitlines()[0])  # already on disk
    assert rec["request_id"] == "r-1" and rec["time"].endswith("+00:00")
    assert rec["router_version"] == "scored/7"
    assert rec["decision"] == {
        "tier": "haiku",
        "tier_index": 0,
        "p_pass": {"haiku": 0.31, "sonnet": 0.74, "opus": 0.9},
        "reason": "policy",
    }
    assert [(a["tier"], a["outcome"], a["reason"]) for a in rec["attempts"]] == [
        ("haiku", "failed", "refusal"),
        ("sonnet", "passed", None),
    ]
    assert rec["tags"] == {"team": "search", "environment": "prod", "workload": "qa"}
    assert rec["usage"] == res.usage.to_dict() and rec["cost_usd"] == pytest.approx(res.cost_usd)
    assert rec["latency_ms"] > 0 and rec["escalations"] == 1 and rec["ok"] is True
    # The default keeps no text; a router without a featurizer logs no features, and says so.
    why = "router_without_features"
    assert rec["prompt"] == {"storage": "features", "chars": 12, "reason": why}
    assert rec["exploration"] is None


@pytest.mark.parametrize("storage", list(PromptStorage))
def test_prompt_storage(
    storage: PromptStorage, server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = lambda m, b: Reply("ok answer")
    path = tmp_path / "log.jsonl"
    cfg = TieredClientConfig(prompt_storage=storage, prompt_hash_key=b"k")
    client = TieredClient(
        FixedTierRouter(ladder, 0), bedrock, OutcomeLogger([JsonlSink(path)]), cfg
    )
    client.converse("secret prompt")
    client.converse("secret prompt")
    a, b = list(read_log(path))
    raw = path.read_text()
    if storage is PromptStorage.STORE:
        assert a["prompt"]["text"] == "secret prompt"
    else:
        assert "secret prompt" not in raw
    if storage is PromptStorage.HASH:
        assert a["prompt"]["sha256"] == b["prompt"]["sha256"] and len(a["prompt"]["sha256"]) == 64
    if storage is PromptStorage.DROP:
        assert a["prompt"] == {"storage": "drop", "chars": 13}


def test_exploration_starts_lower_and_logs_propensity(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = lambda m, b: Reply("fine answer")
    path = tmp_path / "log.jsonl"
    cfg = TieredClientConfig(exploration_rate=0.3, seed=3)
    client = TieredClient(ScoredRouter(ladder, 2), bedrock, OutcomeLogger([JsonlSink(path)]), cfg)
    for _ in range(40):
        client.converse("q")
    recs = list(read_log(path))
    explored = [r for r in recs if r["exploration"]["explored"]]
    assert 3 <= len(explored) <= 25
    for r in recs:
        e = r["exploration"]
        assert e["decided_tier"] == "opus" and e["rate"] == 0.3
        assert e["propensity"] == pytest.approx(0.3 if e["explored"] else 0.7)
        assert r["start_tier"] == ("sonnet" if e["explored"] else "opus")
        assert r["attempts"][0]["tier"] == r["start_tier"]


def test_reader_skips_torn_tail_and_writer_starts_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    sink = JsonlSink(path)
    sink.write({"request_id": "a"})
    sink.close()
    with path.open("ab") as f:
        f.write(b'{"request_id": "tor')  # a crash mid-write
    stats = ReadStats()
    assert [r["request_id"] for r in read_log(path, stats)] == ["a"]
    assert stats.torn_tail and stats.bad_lines == 1
    sink = JsonlSink(path)
    sink.write({"request_id": "b"})
    sink.close()
    stats = ReadStats()
    assert [r["request_id"] for r in read_log(path, stats)] == ["a", "b"]
    assert stats.bad_lines == 1 and not stats.torn_tail


class FlakySink:
    def __init__(self) -> None:
        self.fail = True
        self.got: list[str] = []

    def write(self, record: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.got.append(record["request_id"])

    def close(self) -> None:
        pass


def test_logger_holds_records_a_sink_refused_and_delivers_in_order(tmp_path: Path) -> None:
    flaky = FlakySink()
    good = JsonlSink(tmp_path / "log.jsonl")
    logger = OutcomeLogger([flaky, good])
    assert logger.write({"request_id": "1"}) is False
    assert logger.write({"request_id": "2"}) is False
    assert logger.backlog == 2
    flaky.fail = False
    logger.write({"request_id": "3"})  # queued behind 1 and 2 unless the retry ran first
    assert logger.flush(timeout_s=60)
    assert flaky.got == ["1", "2", "3"] and logger.backlog == 0
    assert [r["request_id"] for r in read_log(tmp_path / "log.jsonl")] == ["1", "2", "3"]
    logger.close()


class DownSink:
    """Refuses every record until `up`; notes which thread made each call."""

    def __init__(self) -> None:
        self.up = False
        self.got: list[str] = []
        self.threads: list[int] = []

    def write(self, record: dict[str, Any]) -> None:
        self.threads.append(threading.get_ident())
        if not self.up:
            raise ConnectionError("bucket unreachable")
        self.got.append(record["request_id"])

    def close(self) -> None:
        pass


def test_backlog_is_bounded_drops_the_oldest_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = DownSink()
    logger = OutcomeLogger([sink], max_backlog=3)
    with caplog.at_level(logging.ERROR, logger="serving.outcome_log"):
        assert not any(logger.write({"request_id": str(i)}) for i in range(12))
    assert logger.backlog == 3
    st = logger.stats()
    assert st["backlog"] == 3 and st["max_backlog"] == 3
    assert logger.dropped == 9 and st["dropped"] == 9 and st["sinks"][0]["dropped"] == 9
    # the first drop, and the 10th would be next: a trail, not one line per record
    drops = [r.getMessage() for r in caplog.records if "dropped the oldest" in r.getMessage()]
    assert len(drops) == 1 and "request_id 0" in drops[0] and "1 dropped" in drops[0]
    sink.up = True
    assert logger.flush(timeout_s=60)
    assert sink.got == ["9", "10", "11"] and logger.stats()["sinks"][0]["written"] == 3
    logger.close()
    with pytest.raises(ValueError, match="max_backlog"):
        OutcomeLogger([sink], max_backlog=0)


def test_a_down_sink_is_retried_off_the_request_thread(tmp_path: Path) -> None:
    down = DownSink()
    path = tmp_path / "log.jsonl"
    logger = OutcomeLogger([down, JsonlSink(path)])
    me = threading.get_ident()
    for i in range(5):
        assert logger.write({"request_id": str(i)}) is False
    assert down.threads.count(me) == 1  # only the first record tried the dead sink in line
    assert [r["request_id"] for r in read_log(path)] == ["0", "1", "2", "3", "4"]
    down.up = True
    assert logger.flush(timeout_s=60)
    assert down.got == ["0", "1", "2", "3", "4"] and down.threads.count(me) == 1
    assert logger.write({"request_id": "5"}) is True  # drained: in line again
    assert down.threads[-1] == me and down.got[-1] == "5"
    logger.close()
    assert logger.stats()["dropped"] == 0


def test_close_counts_what_it_could_not_write(caplog: pytest.LogCaptureFixture) -> None:
    sink = DownSink()
    logger = OutcomeLogger([sink], close_timeout_s=30)
    logger.write({"request_id": "a"})
    with caplog.at_level(logging.ERROR, logger="serving.outcome_log"):
        logger.close()
    st = logger.stats()
    assert (st["backlog"], st["dropped"], st["sinks"][0]["written"]) == (0, 1, 0)
    assert "1 held record(s) not written at close" in caplog.text


CHILD = """
import sys
from serving.outcome_log import JsonlSink
sink = JsonlSink(sys.argv[1], fsync=False)
i = 0
while True:
    sink.write({"request_id": f"r{i}", "pad": "x" * (i % 5000)})
    print(f"r{i}", flush=True)
    i += 1
"""


def test_sigkill_mid_stream_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    acked = []
    try:
        for line in child.stdout:
            acked.append(line.strip())
            if len(acked) >= 3000:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    stats = ReadStats()
    ids = [r["request_id"] for r in read_log(path, stats)]
    assert stats.bad_lines <= 1  # at most a torn last line
    assert set(acked) <= set(ids)
    assert len(ids) >= len(acked)
    for line in path.read_bytes().split(b"\n")[:-1]:  # every complete line parses
        json.loads(line)
