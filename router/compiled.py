"""The optional compiled kernels of the static featurizer (router/_hotpath.c).

`HOTPATH` is the compiled module, or None when it was not built (no C compiler at
install time) or TIER_ROUTER_PURE_PYTHON=1 is set; the router then runs the Python
version of each kernel, which gives the same numbers more slowly. Classes take the
module as a `kernels` argument so tests can run both side by side.

Never slow in silence: `warn_if_missing` (called when a Router loads) warns once per
process when the module was not built, unless TIER_ROUTER_PURE_PYTHON chose that.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

PURE_PYTHON_ENV = "TIER_ROUTER_PURE_PYTHON"
MISSING_MESSAGE = (
    "tier-router: the compiled route() kernels (router._hotpath) are not built, so route() "
    "runs the pure-Python kernels (about twice as slow). Install with a C compiler present "
    "(`pip install .`; in an editable checkout, `python setup.py build_ext --inplace` after "
    f"any clean), or set {PURE_PYTHON_ENV}=1 to choose the Python kernels knowingly."
)


def _chosen_pure_python() -> bool:
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


def _load() -> ModuleType | None:
    if _chosen_pure_python():
        return None
    try:
        from router import _hotpath
    except ImportError:
        return None
    return _hotpath


HOTPATH: ModuleType | None = _load()
_warned = False


def warn_if_missing(kernels: ModuleType | None = HOTPATH) -> bool:
    """Warn (RuntimeWarning, once per process) when the compiled kernels are missing and
    nobody chose the Python ones; True when it warned now."""
    global _warned
    if kernels is not None or _chosen_pure_python() or _warned:
        return False
    _warned = True
    warnings.warn(MISSING_MESSAGE, RuntimeWarning, stacklevel=3)
    return True
