"""The S3 sink against moto in server mode on loopback, including S3 going away."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loopback import MotoS3 as Moto

from serving.outcome_log import OutcomeLogger
from serving.s3_sink import S3Sink, S3SinkConfig


def sink_for(m: Moto, spool: Path, **kw: Any) -> S3Sink:
    cfg = S3SinkConfig(
        bucket=m.bucket,
        spool_dir=str(spool),
        endpoint_url=m.url,
        dummy_credentials=True,
        connect_timeout_s=0.5,
        read_timeout_s=2.0,
        max_attempts=1,
        **kw,
    )
    return S3Sink(cfg)


def test_batches_upload_as_jsonl_objects(moto: Moto, tmp_path: Path) -> None:
    sink = sink_for(moto, tmp_path / "spool", batch_size=3)
    logger = OutcomeLogger([sink])
    for i in range(7):
        logger.write({"request_id": f"r{i}"})
    sink.upload_ready()
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=moto.bucket)["Contents"]]
    assert len(keys) == 2 and all(k.startswith("outcomes/") and k.endswith(".jsonl") for k in keys)
    assert sink.flush() == 0  # seals the 7th record's batch and uploads it
    assert sorted(r["request_id"] for r in moto.records()) == [f"r{i}" for i in range(7)]
    assert sink.pending_batches() == []


def test_s3_down_spools_then_uploads_when_back(moto: Moto, tmp_path: Path) -> None:
    sink = sink_for(moto, tmp_path / "spool", batch_size=2)
    moto.stop()
    for i in range(5):
        sink.write({"request_id": f"r{i}"})  # never raises, never blocks on S3
    assert sink.flush() == 3  # 3 sealed batches wait on disk
    assert sink.failed_uploads >= 1
    moto.start()  # same port; moto keeps its state in-process
    assert sink.flush() == 0
    assert sorted(r["request_id"] for r in moto.records()) == [f"r{i}" for i in range(5)]


def test_spool_survives_a_restart(moto: Moto, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    moto.stop()
    first = sink_for(moto, spool, batch_size=100)
    for i in range(4):
        first.write({"request_id": f"r{i}"})
    # the process dies here: no close(), records only in spool/current.jsonl
    moto.start()
    second = sink_for(moto, spool, batch_size=100)
    assert second.flush() == 0
    assert sorted(r["request_id"] for r in moto.records()) == [f"r{i}" for i in range(4)]


def test_background_uploader(moto: Moto, tmp_path: Path) -> None:
    sink = sink_for(moto, tmp_path / "spool", batch_size=2, upload_interval_s=0.05).start()
    sink.write({"request_id": "a"})
    sink.write({"request_id": "b"})  # fills a batch and wakes the uploader
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not moto.records():
        time.sleep(0.05)
    assert [r["request_id"] for r in moto.records()] == ["a", "b"]
    sink.write({"request_id": "c"})
    sink.close()  # seals and uploads the rest
    assert sorted(r["request_id"] for r in moto.records()) == ["a", "b", "c"]
