"""Bounds of the serving path, each a defect that was found: a stream that breaks with a
non-botocore error still logs its record, the EventStream is closed on every path, a bad
stream request raises on the call, a HASH without a key is refused, the logger's close
does not race its flusher, the local server does not hang on a negative Content-Length,
and the record says where the walk started and why."""

from __future__ import annotations

import functools
import http.client
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fake_bedrock import LocalBedrock, Reply
from router.ladder import Ladder
from serving.conversation import RequestError
from serving.metrics import Window
from serving.outcome_log import (
    JsonlSink,
    OutcomeLogger,
    PromptStorage,
    prompt_field,
    read_log,
)
from serving.outcome_record import OutcomeLogRecord
from serving.routing import FixedTierRouter
from serving.tiered_client import (
    StreamDelta,
    TieredClient,
    TieredClientConfig,
    TieredClientError,
)
from training.log_labels import Grades, calibration_labels


class _Stream:
    """A real boto3 EventStream, seen through: counts close() and can break after
    `break_after` events with an error botocore never raises."""

    def __init__(self, inner: Any, break_after: int | None, closed: list[int]) -> None:
        self._inner, self._break_after, self._closed = inner, break_after, closed

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for n, event in enumerate(self._inner):
            if self._break_after is not None and n >= self._break_after:
                raise RuntimeError("decoder blew up")
            yield event

    def close(self) -> None:
        self._closed.append(1)
        self._inner.close()


class _Bedrock:
    """The real boto3 client, its converse_stream wrapped by `_Stream`."""

    def __init__(self, real: Any, break_after: int | None) -> None:
        self._real, self._break_after = real, break_after
        self.closed: list[int] = []

    def converse(self, **kw: Any) -> Any:
        return self._real.converse(**kw)

    def converse_stream(self, **kw: Any) -> Any:
        resp = dict(self._real.converse_stream(**kw))
        resp["stream"] = _Stream(resp["stream"], self._break_after, self.closed)
        return resp


def _client(bedrock: Any, ladder: Ladder, log: Path, **cfg: Any) -> TieredClient:
    logger = OutcomeLogger([JsonlSink(log)])
    return TieredClient(FixedTierRouter(ladder, 0), bedrock, logger, TieredClientConfig(**cfg))


def test_a_stream_broken_by_a_non_botocore_error_is_logged_and_closed(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = lambda m, b: Reply("one two three four five six seven eight")
    wrapped = _Bedrock(bedrock, break_after=3)
    client = _client(wrapped, ladder, tmp_path / "log.jsonl")
    got: list[Any] = []
    with pytest.raises(TieredClientError):
        for ev in client.converse_stream("tell me a story"):
            got.append(ev)
    assert any(isinstance(e, StreamDelta) for e in got)  # it had started: committed
    assert client.logger is not None
    client.logger.close()
    (rec,) = [OutcomeLogRecord.from_dict(r) for r in read_log(tmp_path / "log.jsonl")]
    assert not rec.ok and rec.attempts[-1].outcome == "error"
    assert "RuntimeError: decoder blew up" in (rec.attempts[-1].reason or "")
    assert rec.attempts[-1].verdict is not None
    assert rec.attempts[-1].verdict.to_dict() == {"kind": "failed", "signal": "error"}
    assert wrapped.closed, "the EventStream was closed"


@pytest.mark.parametrize("how", ["read_whole", "abandoned", "verified"])
def test_the_event_stream_is_closed_on_every_path(
    how: str, server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    server.responder = lambda m, b: Reply("alpha beta gamma delta")
    wrapped = _Bedrock(bedrock, break_after=None)
    client = _client(wrapped, ladder, tmp_path / "log.jsonl")
    events = client.converse_stream("hello", verify=how == "verified")
    if how == "abandoned":
        next(events)
        events.close()
    else:
        list(events)
    assert len(wrapped.closed) == 1
    assert client.logger is not None
    client.logger.close()
    assert len(list(read_log(tmp_path / "log.jsonl"))) == 1


def test_converse_stream_raises_a_bad_request_on_the_call(
    bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    client = _client(bedrock, ladder, tmp_path / "log.jsonl")
    with pytest.raises(RequestError, match="non-empty"):
        client.converse_stream("   ")  # not on the first next()


def test_hash_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty secret prompt_hash_key"):
        TieredClientConfig(prompt_storage=PromptStorage.HASH)
    with pytest.raises(ValueError, match="non-empty secret prompt_hash_key"):
        prompt_field("hello", PromptStorage.HASH, b"")
    keyed = prompt_field("hello", PromptStorage.HASH, b"secret")
    assert keyed["sha256"] != prompt_field("hello", PromptStorage.HASH, b"other")["sha256"]


class _StuckSink:
    """Refuses the first write (so the record goes to the backlog), then hangs the
    flusher's retry until released: close() gives up on it and clears the backlog."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.written: list[str] = []

    def write(self, record: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise OSError("disk full")
        self.entered.set()
        self.release.wait(30)
        self.written.append(record["request_id"])

    def close(self) -> None:
        pass


def test_logger_close_does_not_race_a_stuck_flusher() -> None:
    sink = _StuckSink()
    logger = OutcomeLogger([sink], retry_interval_s=0.01, close_timeout_s=0.2)
    errors: list[BaseException] = []
    hook = threading.excepthook
    threading.excepthook = lambda a: errors.append(a.exc_value or RuntimeError())
    try:
        assert logger.write({"request_id": "r1"}) is False
        assert sink.entered.wait(10)  # the flusher is inside the retry now
        logger.close()  # gives up waiting, counts r1 as not written
        assert logger.stats()["dropped"] == 1
        assert logger.write({"request_id": "r2"}) is False  # after close: counted, not lost
        assert logger.stats()["dropped"] == 2
        sink.release.set()  # the stuck write lands after all
        flusher = logger._flusher
        assert flusher is not None
        flusher.join(10)
    finally:
        threading.excepthook = hook
    assert errors == []  # no IndexError from a backlog close() had cleared
    assert sink.written == ["r1"]
    assert logger.stats()["dropped"] == 1  # r1 was delivered: only r2 is lost


def test_local_server_answers_a_negative_content_length(server: LocalBedrock) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/model/x/converse", skip_accept_encoding=True)
    conn.putheader("Content-Length", "-5")
    conn.endheaders()
    try:
        resp = conn.getresponse()
    except TimeoutError:  # the defect: the server waited for EOF
        pytest.fail("the local server hung on a negative Content-Length")
    assert resp.status == 400
    assert b"invalid Content-Length" in resp.read()
    conn.close()


def test_record_keeps_the_decision_and_where_the_walk_started(
    server: LocalBedrock, bedrock: Any, ladder: Ladder, tmp_path: Path
) -> None:
    """A sticky conversation starts above the router's decision: the record says both,
    and the monitor reports both mixes."""
    server.responder = lambda m, b: Reply("a fine answer")
    log = tmp_path / "log.jsonl"
    logger = OutcomeLogger([JsonlSink(log)])
    top = TieredClient(FixedTierRouter(ladder, -1), bedrock, logger)
    bottom = TieredClient(FixedTierRouter(ladder, 0), bedrock, logger)
    bottom._sticky = top._sticky  # one service's conversations, two routers
    top.converse("first turn", conversation_id="c1")
    bottom.converse("second turn", conversation_id="c1")
    bottom.converse("another conversation")
    logger.close()
    recs = [OutcomeLogRecord.from_dict(r) for r in read_log(log)]
    _first, pinned, fresh = recs
    names = ladder.names
    assert pinned.decision is not None and pinned.decision.tier == names[0]
    assert pinned.start_tier == names[-1]
    assert pinned.start_reason == f"sticky: conversation is on {names[-1]}"
    assert fresh.start_reason == "router decision" and fresh.start_tier == names[0]
    w = Window("s", "e")
    for r in recs:
        w.add(r)
    s = w.summary(names)
    assert s["tier_mix"][names[0]] == pytest.approx(2 / 3, abs=1e-3)
    assert s["start_tier_mix"][names[-1]] == pytest.approx(2 / 3, abs=1e-3)


def test_monitor_leaves_cascade_judged_requests_out_of_calibration(ladder: Ladder) -> None:
    """The verifier's accept/reject is a prediction: a cascade request's decided attempt
    is counted as verifier_judged, never as a calibration label."""
    names = ladder.names
    t0 = ladder.tiers[0]

    def rec(rid: str, outcome: str, cascade: dict[str, Any] | None) -> OutcomeLogRecord:
        return OutcomeLogRecord.from_dict({
            "request_id": rid,
            "decision": {"tier": names[0], "tier_index": 0,
                         "p_pass": {n: 0.5 for n in names}},
            "attempts": [{"tier": t0.name, "model_id": t0.model_id, "role": "decided",
                          "outcome": outcome}],
            "cascade": cascade,
        })  # fmt: skip

    # The rules are training's (monitor passes them in); a grade makes a cascade answer a label.
    labels = functools.partial(calibration_labels, grades=Grades({"d": {t0.name: 1.0}}))
    w = Window("s", "e")
    w.add(rec("a", "passed", {"point": "policy"}), labels)
    w.add(rec("b", "rejected", {"point": "policy"}), labels)
    w.add(rec("c", "failed", None), labels)
    w.add(rec("d", "rejected", {"point": "policy"}), labels)
    cal = w.summary(names)["calibration"][names[0]]
    assert cal["labels"] == 2 and cal["observed"] == 0.5
    assert cal["verifier_judged"] == 2
