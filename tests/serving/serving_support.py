"""Helpers the serving tests import by name (a conftest cannot be imported reliably when
several test folders each have one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loopback import free_port  # noqa: F401 - re-exported for the serving tests

from serving.bedrock_client import BedrockClientConfig, make_bedrock_client

REPO = Path(__file__).resolve().parents[2]


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
