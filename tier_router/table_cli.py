"""`tier-router table`: outcome logs -> the training table (Parquet), here or on Ray.

Argument parsing and validation only; the transformation is training/scale_table.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tier_router.argtypes import (
    DefaultsHelpFormatter,
    add_grades,
    add_logs,
    add_tiers,
    existing_dir,
    int_in,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "table",
        help="outcome logs -> training table (Parquet) for `retrain --table`, here or on Ray",
        description=(
            "Parse, validate, dedupe by request id, label (with propensity weights) and "
            "featurize (the bundle's featurizer) outcome logs into a Parquet table. "
            "--engine local streams in this process (one Parquet file); --engine ray runs "
            "the same steps on Ray Data (a directory or s3:// prefix of Parquet files)."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    add_logs(p)
    add_tiers(p)
    p.add_argument(
        "--bundle",
        type=existing_dir,
        required=True,
        help="bundle whose featurizer makes the features (e.g. the champion's)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="local: a .parquet file; ray: a directory or s3://bucket/prefix/",
    )
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="where to run")
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join ('auto' on a cluster node); default: a local Ray",
    )
    p.add_argument(
        "--featurizers",
        type=int_in(1, 10_000),
        default=1,
        help="Ray actors featurizing (one CPU each)",
    )
    p.add_argument(
        "--label-rule",
        choices=["first-attempt", "all-tried"],
        default="first-attempt",
        help="which logged labels to keep (as retrain)",
    )
    add_grades(p)
    p.set_defaults(func=cmd_table)


def cmd_table(a: argparse.Namespace) -> int:
    try:
        from training.scale_table import TableSpec, build_table, build_table_ray
    except ImportError as e:
        print(
            f"tier-router table: needs the scale extra ({e}); pip install 'tier-router[scale]'",
            file=sys.stderr,
        )
        return 2
    try:
        spec = TableSpec.of(Path(a.tiers), Path(a.bundle), a.label_rule, tuple(a.grades or ()))
    except ValueError as e:
        print(f"tier-router table: error: {e}", file=sys.stderr)
        return 2
    started = time.monotonic()
    if a.engine == "local":
        if str(a.out).startswith("s3://"):
            print(
                "tier-router table: error: --out: --engine local writes a local file",
                file=sys.stderr,
            )
            return 2
        rows = build_table(a.log, spec, Path(a.out))
    else:
        import ray

        ray.init(address=a.ray_address, include_dashboard=False, log_to_driver=False)
        try:
            rows = build_table_ray(a.log, spec, str(a.out), featurizers=a.featurizers)
        finally:
            ray.shutdown()
    out = {
        "rows": rows,
        "out": str(a.out),
        "engine": a.engine,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(out), flush=True)
    return 0
