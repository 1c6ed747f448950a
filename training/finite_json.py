"""JSON without NaN: a number that is not finite is written as null, never as `NaN`.

`json.dumps` writes NaN and Infinity, which are not JSON: a script's parser refuses them
and a reader of a report mistakes them for a measurement. Where a figure is undefined
(a target out of reach, an empty split) the report says null instead.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float (also numpy's) replaced by None, recursively."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # a numpy scalar
        try:
            return finite(obj.item())
        except (TypeError, ValueError):
            return obj
    if hasattr(obj, "tolist") and callable(obj.tolist):  # a numpy array
        return finite(obj.tolist())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` of `finite(obj)`; refuses (ValueError) anything still not finite."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
