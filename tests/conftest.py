"""Shared fixtures: the public outcomes files beside the repo and a small trained bundle.

Tests use small slices of the real data. Under CI=true a missing ../shared/data is a
failure, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from compiled_kernels import require_compiled
from loopback import MotoS3
from realdata import (  # noqa: F401 - re-exported for tests that import them from here
    LADDERS,
    MISSING_DATA,
    REPO,
    SHARED_DATA,
    require_shared,
    slice_outcomes,
    train_quick,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if {"integration", "serving", "reliability", "labeling"} & set(parts):
            item.add_marker(pytest.mark.integration)


def _skip_reason(rep: pytest.TestReport) -> str:
    lr = rep.longrepr
    return str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line that says how many tests were skipped for missing data, so a run without
    ../shared/data cannot pass for a full one."""
    skipped = terminalreporter.stats.get("skipped", [])
    no_data = sum(1 for rep in skipped if MISSING_DATA in _skip_reason(rep))
    if no_data:
        terminalreporter.write_line(
            f"{no_data} of {len(skipped)} skipped test(s) need the public outcomes files, "
            f"and {SHARED_DATA} is missing: put ../shared/data beside the repo or point "
            "TIER_ROUTER_SHARED_DATA at it to run them (under CI=true they fail instead)",
            yellow=True,
            bold=True,
        )
    elif skipped:
        terminalreporter.write_line(f"{len(skipped)} skipped test(s): see the reasons above")


@pytest.fixture(params=["compiled", "python"])
def kernels(request: pytest.FixtureRequest) -> ModuleType | None:
    """Run a test with the compiled kernels and with their Python versions."""
    return require_compiled() if request.param == "compiled" else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    require_shared("mmlu_pro.jsonl.gz")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_outcomes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 train + 300 test prompts of the real routerbench_subset file."""
    src = require_shared("routerbench_subset.jsonl.gz")
    return slice_outcomes(src, tmp_path_factory.mktemp("data") / "rb_small.jsonl", 600, 300)


@pytest.fixture(scope="session")
def small_ladder() -> Path:
    return LADDERS / "routerbench_subset.toml"


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, small_outcomes: Path, small_ladder: Path):
    """A fast-featurizer bundle trained on the small slice (no MLflow)."""
    from training.selection import SelectionConfig

    return train_quick(
        small_outcomes,
        small_ladder,
        tmp_path_factory.mktemp("bundles") / "fast",
        featurizer="fast",
        goal="mid",
        # The soft-cluster model with its category head, which the spine, fast-path and
        # compiled-path tests check; tests/integration/test_candidates.py covers the rest.
        selection=SelectionConfig(families=("soft_cluster",)),
    )


@pytest.fixture(scope="session")
def trained_bundle(trained) -> Path:
    return trained.bundle


@pytest.fixture
def moto() -> Iterator[MotoS3]:
    """A fresh bucket on a moto S3 server on 127.0.0.1 (stopped after the test)."""
    m = MotoS3()
    m.start()
    m.client().create_bucket(Bucket=m.bucket)
    yield m
    m.stop()


@pytest.fixture(scope="session")
def answers_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """900 train + 240 test prompts of mmlu_pro_answers: real answers of every tier and of
    the second opinion."""
    src = require_shared("mmlu_pro_answers.jsonl.gz")
    return slice_outcomes(src, tmp_path_factory.mktemp("answers") / "mmlu.jsonl", 900, 240)


@pytest.fixture(scope="session")
def cascade_train(tmp_path_factory: pytest.TempPathFactory, answers_slice: Path):
    """A bundle with a verifier and cascade policy, trained on `answers_slice` (no MLflow)."""
    out = tmp_path_factory.mktemp("cascade") / "bundle"
    return train_quick(answers_slice, LADDERS / "mmlu_pro_answers.toml", out)
