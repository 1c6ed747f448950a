"""Serving: call Bedrock on the routed tier, check, escalate, and log outcomes.

Owns boto3 and everything about talking to Bedrock; `router/` never imports this.
"""

from serving.async_client import AsyncTieredClient
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client
from serving.checks import (
    Answer,
    CallableCheck,
    Check,
    EmptyCheck,
    JsonSchemaCheck,
    RefusalCheck,
    RegexCheck,
    SelfCheckConfig,
    StopReasonCheck,
)
from serving.conversation import ConverseRequest, RequestError
from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage, read_log
from serving.pricing import CachePricing, Usage
from serving.request_plan import ConverseOptions
from serving.routing import FixedTierRouter, RouterLike
from serving.s3_sink import S3Sink, S3SinkConfig
from serving.tiered_client import (
    Attempt,
    StreamDelta,
    StreamDone,
    TieredClient,
    TieredClientConfig,
    TieredClientError,
    TieredResponse,
)

__all__ = [
    "Answer",
    "AsyncTieredClient",
    "Attempt",
    "BedrockClientConfig",
    "CachePricing",
    "CallableCheck",
    "Check",
    "ConverseOptions",
    "ConverseRequest",
    "EmptyCheck",
    "FixedTierRouter",
    "JsonSchemaCheck",
    "JsonlSink",
    "OutcomeLogger",
    "PromptStorage",
    "RefusalCheck",
    "RegexCheck",
    "RequestError",
    "RouterLike",
    "S3Sink",
    "S3SinkConfig",
    "SelfCheckConfig",
    "StopReasonCheck",
    "StreamDelta",
    "StreamDone",
    "TieredClient",
    "TieredClientConfig",
    "TieredClientError",
    "TieredResponse",
    "Usage",
    "make_bedrock_client",
    "read_log",
]
