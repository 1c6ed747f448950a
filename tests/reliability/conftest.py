"""Fixtures for the reliability suite: a second real bundle, the local Bedrock server,
boto3 clients with short timeouts, and moto S3 on loopback.

Helpers live here as fixtures (not importable names) because several test folders
have a `conftest.py` and `from conftest import ...` would be ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import free_port as _free_port
from realdata import train_quick

from fake_bedrock import LocalBedrock
from router.ladder import Ladder
from serving.bedrock_client import BedrockClientConfig, make_bedrock_client

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    return _free_port


@pytest.fixture(scope="session")
def bundle_b(tmp_path_factory: pytest.TempPathFactory, small_outcomes: Path, small_ladder: Path):
    """A second real bundle over the same ladder: another seed, goal and granularity, so
    its P(pass) differ from `trained_bundle`'s (what the mixed-version check relies on)."""
    out = tmp_path_factory.mktemp("bundles") / "fast_b"
    return train_quick(
        small_outcomes,
        small_ladder,
        out,
        clusters=(6, 16),
        folds=2,
        featurizer="fast",
        goal="top",
        seed=1,
    ).bundle


@pytest.fixture(scope="session")
def rb_ladder(small_ladder: Path) -> Ladder:
    return Ladder.load(small_ladder)


@pytest.fixture
def server(rb_ladder: Ladder) -> Iterator[LocalBedrock]:
    srv = LocalBedrock(rb_ladder).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def make_client() -> Callable[..., Any]:
    """A real boto3 bedrock-runtime client for `url` with fast retries and timeouts."""

    def make(url: str, max_attempts: int = 3, read_timeout_s: float = 5.0, **kw: Any) -> Any:
        cfg = BedrockClientConfig(
            endpoint_url=url,
            max_attempts=max_attempts,
            retry_delay_scale=0.01,
            connect_timeout_s=1.0,
            read_timeout_s=read_timeout_s,
            **{"dummy_credentials": True, **kw},
        )
        return make_bedrock_client(cfg)

    return make
