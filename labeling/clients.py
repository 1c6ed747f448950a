"""boto3 clients for labeling: bedrock-runtime (the serving factory, with its standard
retries), the bedrock control plane and S3, all from one AwsConfig."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from labeling.config import AwsConfig
from serving.bedrock_client import (
    DUMMY_CREDENTIALS,
    BedrockClientConfig,
    make_bedrock_client,
    scale_retry_delays,
)


def runtime_client(cfg: AwsConfig, pool: int = 16) -> Any:
    return make_bedrock_client(
        BedrockClientConfig(
            region=cfg.region,
            endpoint_url=cfg.endpoint_url,
            max_attempts=cfg.max_attempts,
            read_timeout_s=cfg.read_timeout_s,
            retry_delay_scale=cfg.retry_delay_scale,
            max_pool_connections=max(1, pool),
            dummy_credentials=cfg.dummy_credentials,
        )
    )


def _client(service: str, cfg: AwsConfig, endpoint_url: str | None) -> Any:
    config = Config(
        region_name=cfg.region,
        retries={"mode": "standard", "total_max_attempts": cfg.max_attempts},
        read_timeout=cfg.read_timeout_s,
    )
    kwargs: dict[str, Any] = {"config": config}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if cfg.dummy_credentials:
        kwargs.update(DUMMY_CREDENTIALS)
    client = boto3.session.Session().client(service, **kwargs)
    if cfg.retry_delay_scale != 1.0:
        scale_retry_delays(client, cfg.retry_delay_scale, cfg.max_attempts)
    return client


def control_client(cfg: AwsConfig) -> Any:
    """The `bedrock` control plane (model invocation jobs); same endpoint as runtime offline."""
    return _client("bedrock", cfg, cfg.endpoint_url)


def s3_client(cfg: AwsConfig) -> Any:
    return _client("s3", cfg, cfg.s3_endpoint_url)
