"""Outcome logs at scale: streamed from files and S3 prefixes, deduplicated in 8 bytes per
id, windows folded in one pass, and a serving backlog bounded in bytes that reports what
it drops."""

from __future__ import annotations

import argparse
import gzip
import json
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from loopback import MotoS3
from serving_support import REPO

from fake_bedrock import LocalBedrock, Reply
from router.ladder import Ladder
from serving.log_source import LogSourceError, expand
from serving.metrics import EXACT_LATENCIES, LatencySummary, backlog_emf, iter_windows
from serving.outcome_log import (
    JsonlSink,
    OutcomeLogger,
    PromptStorage,
    ReadStats,
    encode_record,
    read_log,
)
from serving.outcome_record import OutcomeLogRecord
from serving.routing import FixedTierRouter
from serving.s3_sink import S3Sink, S3SinkConfig
from serving.seen_ids import SeenIds
from serving.tiered_client import TieredClient, TieredClientConfig
from tier_router.serving_cli import register
from training.feedback import FeedbackStats, iter_labelled

TIERS = REPO / "data" / "ladders" / "mmlu_pro.toml"


def served(server: LocalBedrock, bedrock: Any, ladder: Ladder, local: Path, moto: MotoS3,
           tmp_path: Path, n: int = 9) -> list[str]:  # fmt: skip
    """`n` real requests logged to a local file and to S3 (batches of 2): the same records
    in two places. Haiku fails every third prompt, so some escalate."""
    haiku = ladder.tiers[0].model_id

    def responder(model_id: str, body: Mapping[str, Any]) -> Reply:
        q = body["messages"][-1]["content"][0]["text"]
        return Reply("I don't know.") if model_id == haiku and q.endswith("0") else Reply("Yes.")

    server.responder = responder
    sink = S3Sink(
        S3SinkConfig(
            bucket=moto.bucket,
            spool_dir=str(tmp_path / "spool"),
            prefix="logs/",
            batch_size=2,
            endpoint_url=moto.url,
            dummy_credentials=True,
        )
    )
    logger = OutcomeLogger([JsonlSink(local), sink])
    store = TieredClientConfig(prompt_storage=PromptStorage.STORE)  # feedback writes the text
    client = TieredClient(FixedTierRouter(ladder, 0), bedrock, logger, store)
    prompts = [f"question {i * 10 + (i % 3 != 0)}" for i in range(n)]
    for q in prompts:
        client.converse(q)
    logger.close()  # seals and uploads the last batch
    return prompts


def test_feedback_reads_an_s3_prefix_page_by_page_and_dedupes_across_places(
    server: LocalBedrock,
    bedrock: Any,
    ladder: Ladder,
    moto: MotoS3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Readers take S3's endpoint and credentials from the AWS environment, as in a job.
    env = {"AWS_ENDPOINT_URL_S3": moto.url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    local = tmp_path / "log.jsonl"
    prompts = served(server, bedrock, ladder, local, moto, tmp_path)
    s3 = moto.client()
    # A gzipped copy of the local log, uploaded beside the sink's batches.
    copy = gzip.compress(local.read_bytes())
    s3.put_object(Bucket=moto.bucket, Key="logs/z/copy.jsonl.gz", Body=copy)
    prefix = f"s3://{moto.bucket}/logs/"
    sources = list(expand(prefix, s3, page_size=2))  # 5 batches + the copy, 2 keys a page
    assert len(sources) == 6 and all(s.name.startswith(prefix) for s in sources)

    ids = [json.loads(line)["request_id"] for line in local.read_text().splitlines()]
    from_s3 = [r["request_id"] for r in read_log(f"s3://{moto.bucket}/logs/", s3=s3)]
    assert sorted(from_s3) == sorted(ids * 2)  # every batch and the gzipped copy

    st = FeedbackStats()
    rows = list(iter_labelled([local, f"s3://{moto.bucket}/logs/"], ladder, "train", st))
    assert [r.request_id for r, _ in rows] == ids  # first occurrence kept, in read order
    assert st.skipped_duplicate == 2 * len(ids) and st.records_read == 3 * len(ids)
    assert {o.prompt for _, o in rows} == set(prompts)

    # The CLI takes the prefix.
    out = tmp_path / "fb.jsonl"
    parser = argparse.ArgumentParser(prog="tier-router")
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(
        ["feedback", "--log", f"s3://{moto.bucket}/logs/", "--tiers", str(TIERS), "--out", str(out)]
    )
    assert a.func(a) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == len(ids) and summary["skipped_duplicate"] == len(ids)

    with pytest.raises(LogSourceError, match="no objects"):
        list(read_log(f"s3://{moto.bucket}/nothing-here/", s3=s3))
    with pytest.raises(LogSourceError, match="cannot read from S3"):
        list(read_log("s3://no-such-bucket-i27/logs/", s3=s3))


def test_reading_holds_one_block_not_the_log(tmp_path: Path) -> None:
    """Peak memory of a read does not grow with the log: 4x the records, same peak."""
    line = encode_record({"request_id": "r", "attempts": [], "prompt": {"text": "x" * 800}})

    def peak(n: int) -> int:
        path = tmp_path / f"{n}.jsonl.gz"
        with gzip.open(path, "wb", compresslevel=1) as f:
            for _ in range(n):
                f.write(line)
        tracemalloc.start()
        count = sum(1 for _ in read_log(path))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == n
        return top

    small, large = peak(5_000), peak(20_000)
    assert large < 1.5 * small and large < 2_000_000, (small, large)


def test_torn_gzip_and_overlong_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    good = [encode_record({"request_id": f"r{i}", "attempts": []}) for i in range(50)]
    torn = tmp_path / "torn.jsonl.gz"
    whole = gzip.compress(b"".join(good))
    torn.write_bytes(whole[: len(whole) * 2 // 3])  # a crash mid-upload
    st = ReadStats()
    got = [r["request_id"] for r in read_log(torn, st)]
    assert got == [f"r{i}" for i in range(len(got))] and 0 < len(got) < 50
    assert st.corrupt_files == [str(torn)] and st.torn_tail

    import serving.log_source as ls

    long = tmp_path / "long.jsonl"
    long.write_bytes(good[0] + b"[" * 5000 + b"\n" + good[1])
    st = ReadStats()
    old = ls.MAX_LINE_BYTES
    ls.MAX_LINE_BYTES = 1000
    try:
        assert [r["request_id"] for r in read_log(long, st)] == ["r0", "r1"]
    finally:
        ls.MAX_LINE_BYTES = old
    assert st.bad_lines == 1


def test_seen_ids_exact_across_compactions() -> None:
    seen = SeenIds()
    n = 70_000  # more than one buffer: the sorted array is searched too
    assert all(seen.add(f"req-{i}") for i in range(n))
    assert not any(seen.add(f"req-{i}") for i in range(0, n, 7))
    assert seen.add("req-new") and len(seen) == n + 1 and seen.nbytes >= 8 * 65_536


def test_time_windows_do_not_depend_on_read_order_and_latency_stays_close() -> None:
    def rec(i: int) -> dict[str, Any]:
        return OutcomeLogRecord(
            request_id=f"r{i}",
            attempts=(),
            time=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
            latency_ms=1.0 + i,
            ok=True,
        ).to_dict()

    recs = [rec(i) for i in range(900)]
    fwd = list(iter_windows(recs, window_s=300))
    rev = list(iter_windows(reversed(recs), window_s=300))
    assert [(w.start, w.end, w.requests) for w in fwd] == [
        (w.start, w.end, w.requests) for w in rev
    ]
    assert [w.requests for w in fwd] == [300, 300, 300]
    counted = list(iter_windows(recs, window_requests=400))
    assert [w.requests for w in counted] == [400, 400, 100]

    summary = LatencySummary()
    xs = [1.0 + (i * 7919) % 100_000 / 10 for i in range(EXACT_LATENCIES * 3)]
    for x in xs:
        summary.add(x)
    exact = sorted(xs)
    for q in (50, 99):
        k = -(-q * len(xs) // 100) - 1
        got = summary.percentile(q)
        assert got is not None and abs(got - exact[k]) <= 0.01 * exact[k]
    assert len(summary.exact) == 0 and len(summary.buckets) < 1000


class _Down:
    def __init__(self) -> None:
        self.up = False
        self.got: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        if not self.up:
            raise OSError("disk gone")
        self.got.append(record)

    def close(self) -> None:
        pass


def test_backlog_is_bounded_in_bytes_and_drops_show_in_a_metric() -> None:
    sink = _Down()
    big = "x" * 1000
    size = len(encode_record({"request_id": "r00", "prompt": {"text": big}}))
    logger = OutcomeLogger([sink], max_backlog_bytes=3 * size + 10, retry_interval_s=5.0,
                           max_retry_interval_s=5.0)  # fmt: skip
    for i in range(10):
        assert logger.write({"request_id": f"r{i:02d}", "prompt": {"text": big}}) is False
    st = logger.stats()
    assert st["backlog"] == 3 and st["backlog_bytes"] == 3 * size <= st["max_backlog_bytes"]
    assert st["dropped"] == 7 and st["dropped_bytes"] == 7 * size
    emf = json.loads(backlog_emf(st, timestamp_ms=0))
    assert emf["OutcomeLogDropped"] == 7 and emf["OutcomeLogBacklogBytes"] == 3 * size
    names = [m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "OutcomeLogDropped" in names and "OutcomeLogDroppedBytes" in names
    sink.up = True
    assert logger.flush(10)
    assert [r["request_id"] for r in sink.got] == ["r07", "r08", "r09"]  # newest kept, in order
    assert logger.stats()["backlog_bytes"] == 0
    logger.close()
    with pytest.raises(ValueError, match="max_backlog_bytes"):
        OutcomeLogger([sink], max_backlog_bytes=0)
