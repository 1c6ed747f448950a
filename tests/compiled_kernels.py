"""The compiled kernels (router/_hotpath.c) for tests: CI requires them to be built."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from router.compiled import HOTPATH


def require_compiled() -> ModuleType:
    """The compiled module; under CI=true its absence is a failure, never a skip."""
    if HOTPATH is None:
        msg = "router/_hotpath.c was not built (no C compiler at install time?)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return HOTPATH
