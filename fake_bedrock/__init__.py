"""A local Bedrock-compatible server, for tests, benchmarks and the offline demo.

A test double, not part of the runtime: `tier-router local-bedrock` and the tests start
it. The real boto3 client talks to it unchanged (Converse, ConverseStream and the Batch
control plane), so retries, error parsing and event-stream reading are exercised as in
production. One module per concern:

- `replay`: answers as the outcomes file recorded them (`OutcomeIndex`, `Reply`);
- `faults`: throttling, 5xx errors and latency at set, seeded rates;
- `wire`: request validation, the HTTP handler, error headers, event-stream frames;
- `batch` and `translate`: Batch Inference jobs over S3, Anthropic <-> Converse bodies;
- `server`: `LocalBedrock`, which ties them together and simulates prompt caching;
- `grades`: the recorded scores of the answers it returned, as a downstream check's grades.
"""

from fake_bedrock.errors import BedrockError
from fake_bedrock.faults import FaultConfig
from fake_bedrock.grades import recorded_grades, write_grades
from fake_bedrock.replay import (
    ErrorReply,
    OutcomeIndex,
    Reply,
    Responder,
    recorded_output_tokens,
    wrong_answer,
)
from fake_bedrock.server import LocalBedrock
from fake_bedrock.wire import event_frame, stream_events
from router.tokens import estimate_tokens

__all__ = [
    "BedrockError",
    "ErrorReply",
    "FaultConfig",
    "LocalBedrock",
    "OutcomeIndex",
    "Reply",
    "Responder",
    "estimate_tokens",
    "event_frame",
    "recorded_grades",
    "recorded_output_tokens",
    "stream_events",
    "write_grades",
    "wrong_answer",
]
