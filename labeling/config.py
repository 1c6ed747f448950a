"""Run configuration, validated once at construction (the CLI and tests build these)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from serving.batch_jobs import check_batch_location

STRATEGIES = ("all", "cascade")
_JOB_PREFIX = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]{0,29}")


@dataclass(frozen=True)
class AwsConfig:
    """Where Bedrock and S3 are. Endpoints point at the local server and moto offline."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    max_attempts: int = 6
    retry_delay_scale: float = 1.0
    read_timeout_s: float = 120.0
    dummy_credentials: bool = False


@dataclass(frozen=True)
class LabelConfig:
    """What to label and how. `spend_cap_usd` None = no cap."""

    prompts: Path
    out: Path
    strategy: str = "all"
    concurrency: int = 8
    spend_cap_usd: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if isinstance(self.concurrency, bool) or not 1 <= self.concurrency <= 256:
            raise ValueError(f"concurrency must be in [1, 256], got {self.concurrency!r}")
        cap = self.spend_cap_usd
        if cap is not None and (not math.isfinite(cap) or cap <= 0):
            raise ValueError(f"spend cap must be a positive number of dollars, got {cap!r}")


@dataclass(frozen=True)
class BatchConfig:
    """Batch inference settings. Jobs are named `<job_prefix>-<run id>-<tier>`, which is
    how a restarted run finds them; the run id hashes the prompts file and the ladder."""

    bucket: str
    role_arn: str
    s3_prefix: str = "tier-router-label"
    job_prefix: str = "label"
    poll_interval_s: float = 30.0
    max_wait_s: float | None = None
    records_per_file: int = 50_000
    grade_concurrency: int = 8

    def __post_init__(self) -> None:
        check_batch_location(self.bucket, self.role_arn, self.s3_prefix)
        if not _JOB_PREFIX.fullmatch(self.job_prefix):
            raise ValueError(
                f"job prefix must be 1-30 letters, digits or '-', got {self.job_prefix!r}"
            )
        if not 0 < self.poll_interval_s <= 3600:
            raise ValueError(f"poll interval must be in (0, 3600] s, got {self.poll_interval_s}")
        if self.max_wait_s is not None and self.max_wait_s < 0:
            raise ValueError(f"max wait must be >= 0 s, got {self.max_wait_s}")
        if not 1 <= self.records_per_file <= 50_000:
            raise ValueError("records per file must be in [1, 50000] (Bedrock's per-file limit)")
        if not 1 <= self.grade_concurrency <= 256:
            raise ValueError("grade concurrency must be in [1, 256]")
