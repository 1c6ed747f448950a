"""What `promote`, `compare` and `retrain` print: reports for people on stderr, and one
JSON document on stdout (always for `retrain`, with `--json` for the other two)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def say(text: str) -> None:
    """A line for people: stderr, so stdout stays the JSON document."""
    print(text, file=sys.stderr)


_JSON_NAMES = {"policy.cost": "policy.cost_usd_per_request"}


def eval_doc(e: Any) -> dict[str, Any]:
    """One scored version as JSON: its label, version and the table's metrics."""
    from training.compare import TABLE_METRICS
    from training.finite_json import finite

    return finite(
        {
            "label": e.label,
            "version": e.version,
            "router_version": e.router_version,
            "tiers": list(e.tiers),
            # Units in the names: a policy's cost is dollars per request.
            "metrics": {_JSON_NAMES.get(k, k): e.metric(k) for k in TABLE_METRICS},
        }
    )


def paired_doc(pr: Any) -> dict[str, Any]:
    from training.finite_json import finite

    return finite(
        {
            "version": pr.label,
            "reference": pr.reference,
            "rounds": pr.rounds,
            "diffs": {k: {**d, "reading": pr.reading(k)} for k, d in pr.diffs.items()},
        }
    )


def json_out(a: argparse.Namespace, doc: dict[str, Any], rc: int) -> int:
    """With --json, the command's one JSON document on stdout; stdout stays empty without."""
    if getattr(a, "json", False):
        from training.finite_json import dumps

        print(dumps(doc, indent=2))
    return rc


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON document on stdout (the human report stays on "
        "stderr; without --json stdout is empty)",
    )
