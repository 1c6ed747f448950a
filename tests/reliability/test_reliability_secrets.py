"""Credentials never reach our logs, errors or outcome records; prompt text is stored,
hashed or dropped as configured, checked on the bytes actually written."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from fake_bedrock import ErrorReply, LocalBedrock, Reply
from router.ladder import Ladder
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage
from serving.routing import FixedTierRouter
from serving.s3_sink import S3Sink, S3SinkConfig
from serving.tiered_client import TieredClient, TieredClientConfig, TieredClientError

KEY_ID = "AKIAFAKERELIABILITY7"
SECRET = "fAkeSecret/RELIABILITY+do-not-log-0123456789"
TOKEN = "FakeSessionToken-RELIABILITY-abcdef0123456789"
OUR_LOGGERS = ("serving", "router", "tier_router", "training", "labeling")


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_credentials_never_in_logs_errors_or_records(
    fake_env: None,
    server: LocalBedrock,
    rb_ladder: Ladder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, botocore included
    log_path = tmp_path / "log.jsonl"
    texts: list[str] = []

    def client(url: str) -> Any:
        cfg = BedrockClientConfig(endpoint_url=url, max_attempts=2, retry_delay_scale=0.01)
        cfg = BedrockClientConfig(**{**cfg.__dict__, "read_timeout_s": 2.0})
        return make_bedrock_client(cfg)

    logger = OutcomeLogger([JsonlSink(log_path)])
    cfg = TieredClientConfig(use_builtin_checks=False)
    codes = [ErrorReply(403, "AccessDeniedException", "denied"), ErrorReply(429, "Throttling")]
    server.responder = lambda m, b: codes[len(m) % 2] if "haiku" in m else Reply("ok")
    for url in (server.url, _dead_url()):
        c = TieredClient(FixedTierRouter(rb_ladder, 0), client(url), logger, cfg)
        try:
            res = c.converse("what is the capital of France?")
            texts.append(repr(res))
        except TieredClientError as e:
            texts += [str(e), repr(e), repr(e.attempts)]
    # the S3 sink failing with the same credentials
    sink = S3Sink(
        S3SinkConfig(bucket="b", spool_dir=str(tmp_path / "spool"), endpoint_url=_dead_url())
    )
    sink.write({"request_id": "x"})
    assert sink.flush() == 1
    sink.close()

    written = log_path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.rglob("*.jsonl"))
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(OUR_LOGGERS))
    # botocore's own DEBUG output prints the signed request (key id, session token): it
    # must never be enabled in production. Everything else, at every level, is checked.
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.levelno >= logging.INFO or not r.name.startswith(("botocore", "urllib3"))
    )
    everything = logged + "\n".join(texts) + written.decode()
    assert len(list(log_path.open())) == 2 and ours
    for secret in (SECRET, TOKEN):
        assert secret not in everything
    assert KEY_ID not in everything


@pytest.mark.parametrize("storage", list(PromptStorage))
def test_prompt_storage_on_the_written_bytes(
    storage: PromptStorage, server: LocalBedrock, rb_ladder: Ladder, tmp_path: Path
) -> None:
    prompt = "My card number is 4111-1111-1111-1111, can you check it?"
    server.responder = lambda m, b: Reply("I cannot help with card numbers.")
    log_path = tmp_path / "log.jsonl"
    sink_dir = tmp_path / "spool"
    s3 = S3Sink(S3SinkConfig(bucket="b", spool_dir=str(sink_dir), endpoint_url=_dead_url()))
    cfg = TieredClientConfig(prompt_storage=storage, prompt_hash_key=b"k" * 32)
    from serving.bedrock_client import DUMMY_CREDENTIALS  # noqa: F401  (documented fake keys)

    bedrock = make_bedrock_client(
        BedrockClientConfig(endpoint_url=server.url, dummy_credentials=True)
    )
    c = TieredClient(
        FixedTierRouter(rb_ladder, 0), bedrock, OutcomeLogger([JsonlSink(log_path), s3]), cfg
    )
    c.converse(prompt)
    s3.flush()
    written = [log_path.read_bytes(), *(p.read_bytes() for p in sink_dir.glob("batch-*.jsonl"))]
    assert len(written) == 2 and all(written)
    for data in written:
        has_text = b"4111-1111-1111-1111" in data
        assert has_text == (storage is PromptStorage.STORE)
        assert (b'"sha256"' in data) == (storage is PromptStorage.HASH)
    s3.close()
