"""A boto3 `bedrock-runtime` client with bounded retries and timeouts.

Throttling and 5xx are retried by botocore's standard retry mode (exponential
backoff with jitter, a retry quota); the tiered client only sees an error once a
tier has stayed unavailable through those attempts, and then fails over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.retries import standard


@dataclass(frozen=True)
class BedrockClientConfig:
    """How to reach Bedrock. `endpoint_url` points at a local server in tests and the demo.

    `max_attempts` counts the first try. `retry_delay_scale` multiplies botocore's
    backoff (1.0 = botocore's own; the demo uses a small value so it runs fast).
    `dummy_credentials` signs with fixed fake keys, for a local server that ignores auth.
    """

    region: str = "us-east-1"
    endpoint_url: str | None = None
    max_attempts: int = 4
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    retry_delay_scale: float = 1.0
    max_pool_connections: int = 16
    dummy_credentials: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError(f"max_attempts must be an integer, got {self.max_attempts!r}")
        if not 1 <= self.max_attempts <= 20:
            raise ValueError(f"max_attempts must be in [1, 20], got {self.max_attempts}")
        for name in ("connect_timeout_s", "read_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        s = self.retry_delay_scale
        if not isinstance(s, int | float) or not math.isfinite(s) or s < 0:
            raise ValueError(f"retry_delay_scale must be a number >= 0, got {s!r}")
        if self.max_pool_connections < 1:
            raise ValueError("max_pool_connections must be >= 1")


DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def make_bedrock_client(cfg: BedrockClientConfig, service: str = "bedrock-runtime") -> Any:
    """A real boto3 bedrock-runtime client configured from `cfg` (or, with `service`,
    another Bedrock client: `bedrock`, the control plane of batch jobs)."""
    config = Config(
        region_name=cfg.region,
        retries={"mode": "standard", "total_max_attempts": cfg.max_attempts},
        connect_timeout=cfg.connect_timeout_s,
        read_timeout=cfg.read_timeout_s,
        max_pool_connections=cfg.max_pool_connections,
    )
    kwargs: dict[str, Any] = {"config": config}
    if cfg.endpoint_url:
        kwargs["endpoint_url"] = cfg.endpoint_url
    if cfg.dummy_credentials:
        kwargs.update(DUMMY_CREDENTIALS)
    client = boto3.session.Session().client(service, **kwargs)
    if cfg.retry_delay_scale != 1.0:
        scale_retry_delays(client, cfg.retry_delay_scale, cfg.max_attempts)
    return client


def scale_retry_delays(client: Any, scale: float, max_attempts: int) -> None:
    """Keep botocore's standard retry decisions and quota, but scale its sleep.

    botocore has no setting for the backoff base, so the standard handler is
    re-registered behind a wrapper that multiplies the delay it returns.
    """
    event = f"needs-retry.{client.meta.service_model.service_id.hyphenize()}"
    unique_id = f"retry-config-{client.meta.service_model.service_id.hyphenize()}"
    client.meta.events.unregister(event, unique_id=unique_id)
    handler = standard.register_retry_handler(client, max_attempts=max_attempts)
    client.meta.events.unregister(event, unique_id=unique_id)
    inner: Callable[..., float | None] = handler.needs_retry

    def needs_retry(**kwargs: Any) -> float | None:
        delay = inner(**kwargs)
        return None if delay is None else delay * scale

    client.meta.events.register(event, needs_retry, unique_id=unique_id)
