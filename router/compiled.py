"""The optional compiled kernels of the static featurizer (router/_hotpath.c).

`HOTPATH` is the compiled module, or None when it was not built (no C compiler at
install time) or TIER_ROUTER_PURE_PYTHON=1 is set; the router then runs the Python
version of each kernel, which gives the same numbers more slowly. Classes take the
module as a `kernels` argument so tests can run both side by side.
"""

from __future__ import annotations

import os
from types import ModuleType

PURE_PYTHON_ENV = "TIER_ROUTER_PURE_PYTHON"


def _load() -> ModuleType | None:
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None
    try:
        from router import _hotpath
    except ImportError:
        return None
    return _hotpath


HOTPATH: ModuleType | None = _load()
