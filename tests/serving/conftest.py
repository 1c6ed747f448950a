"""Fixtures for the serving tests: a ladder, the local Bedrock server, a real boto3 client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from serving_support import REPO, client_for

from fake_bedrock import LocalBedrock
from router.ladder import Ladder


@pytest.fixture(scope="session")
def ladder() -> Ladder:
    return Ladder.load(REPO / "data" / "ladders" / "mmlu_pro.toml")


@pytest.fixture
def server(ladder: Ladder) -> Iterator[LocalBedrock]:
    srv = LocalBedrock(ladder).start()
    srv.keep_requests = True
    yield srv
    srv.stop()


@pytest.fixture
def bedrock(server: LocalBedrock) -> Any:
    return client_for(server.url)
