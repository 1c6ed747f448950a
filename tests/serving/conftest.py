"""Fixtures for the serving tests: a ladder, the local Bedrock server, a real boto3 client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router.ladder import Ladder
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
from serving.local_bedrock import LocalBedrock

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ladder() -> Ladder:
    return Ladder.load(REPO / "data" / "ladders" / "mmlu_pro.toml")


@pytest.fixture
def server(ladder: Ladder) -> Iterator[LocalBedrock]:
    srv = LocalBedrock(ladder).start()
    srv.keep_requests = True
    yield srv
    srv.stop()


def client_for(url: str, max_attempts: int = 3) -> Any:
    return make_bedrock_client(
        BedrockClientConfig(
            endpoint_url=url,
            dummy_credentials=True,
            max_attempts=max_attempts,
            retry_delay_scale=0.01,
            connect_timeout_s=1.0,
            read_timeout_s=10.0,
        )
    )


@pytest.fixture
def bedrock(server: LocalBedrock) -> Any:
    return client_for(server.url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
