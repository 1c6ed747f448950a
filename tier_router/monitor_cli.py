"""`tier-router monitor`: live metrics and drift from outcome logs.

Prints one line per window on stderr (tier mix, escalation rate, cost per request, latency,
calibration per tier); with `--bundle` it flags drift against the bundle's held-out
expectation (bounds in serving/metrics.py) and exits 1 when any window drifted.
`--emf` also writes CloudWatch Embedded Metric Format lines. Usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from serving.metrics import (
    CALIBRATION_MARGIN,
    TV_BOUND,
    Z_BOUND,
    Expectation,
    MetricsError,
    check_drift,
    emf_lines,
    parse_records,
    tier_names,
    windows,
)
from serving.outcome_log import ReadStats, read_log
from serving.outcome_record import OutcomeLogRecord
from tier_router.argtypes import (
    DefaultsHelpFormatter,
    add_logs,
    existing_dir,
    int_in,
    out_file,
    positive_float,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor",
        help="live metrics and drift from outcome logs (CloudWatch EMF)",
        description=(
            "Per window: tier mix, escalation rate, cost per request, latency and "
            "calibration per tier. With --bundle, flags drift: tier mix more than "
            f"{TV_BOUND} total variation from the held-out mix (and |z| > {Z_BOUND}), or a "
            f"tier's calibration gap above its held-out ECE + {CALIBRATION_MARGIN} "
            f"(and |z| > {Z_BOUND}). Exit 1 when any window drifted."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    add_logs(p)
    p.add_argument(
        "--bundle",
        type=existing_dir,
        default=None,
        help="bundle whose held-out expectation (train_report.json) live traffic is compared with",
    )
    p.add_argument("--window-s", type=positive_float, default=300.0, help="window length, s")
    p.add_argument(
        "--window-requests",
        type=int_in(1, 10_000_000),
        default=None,
        help="windows of N requests instead of --window-s",
    )
    p.add_argument("--emf", type=out_file, default=None, help="write EMF JSON lines here")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout: the counts and every window (the per-window "
        "lines are on stderr; without --json stdout is empty)",
    )
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(a: argparse.Namespace) -> int:
    try:
        exp = None if a.bundle is None else Expectation.from_bundle(a.bundle)
        stats = ReadStats()
        records, not_records = _outcome_records(read_log([Path(x) for x in a.log], stats))
        if not records:
            raise MetricsError(
                f"no outcome records in {', '.join(map(str, a.log))} ({stats.bad_lines} "
                f"unreadable line(s), {not_records} JSON line(s) that are not outcome records)"
            )
        names = list(exp.tiers) if exp is not None else tier_names(records)
        wins = windows(records, a.window_s, a.window_requests)
    except MetricsError as e:
        print(f"tier-router monitor: error: {e}", file=sys.stderr)
        return 2
    drifted = 0
    emf: list[str] = []
    summaries = []
    for w in wins:
        if exp is not None:
            drifted += bool(check_drift(w, exp))
        emf += emf_lines(w, names)
        s = w.summary(names)
        summaries.append(s)
        mix = " ".join(f"{t}={v:.2f}" for t, v in s["tier_mix"].items())
        cal = " ".join(
            f"{t}={c['predicted']:.2f}/{c['observed']:.2f}({c['labels']})"
            for t, c in s["calibration"].items()
            if c["labels"]
        )
        print(
            f"{s['start']} n={s['requests']} mix[{mix}] esc={s['escalation_rate']:.3f} "
            f"cost/req=${s['cost_per_request_usd']:.6f} p50={s['latency_p50_ms']:.1f}ms "
            f"p99={s['latency_p99_ms']:.1f}ms cal(pred/obs)[{cal}]",
            file=sys.stderr,
        )
        for finding in w.drift:
            print(f"  DRIFT {finding}", file=sys.stderr)
    if a.emf is not None:
        a.emf.write_text("\n".join(emf) + "\n", encoding="utf-8")
    skipped = f", {stats.bad_lines} unreadable line(s) skipped" if stats.bad_lines else ""
    if not_records:
        skipped += f", {not_records} line(s) that are not outcome records skipped"
    verdict = "no drift" if exp is None or not drifted else f"DRIFT in {drifted} window(s)"
    if exp is None:
        verdict += " checked (no --bundle)"
    print(
        f"monitor: {len(records)} records, {len(wins)} window(s){skipped}; {verdict}",
        file=sys.stderr,
    )
    if a.json:
        doc = {
            "records": len(records),
            "skipped_unreadable_lines": stats.bad_lines,
            "skipped_not_outcome_records": not_records,
            "drift_checked": exp is not None,
            "drifted_windows": drifted,
            "windows": summaries,
        }
        print(json.dumps(doc, indent=2))
    return 1 if drifted else 0


def _outcome_records(lines: Iterable[dict[str, Any]]) -> tuple[list[OutcomeLogRecord], int]:
    """The lines that are outcome records, and how many JSON lines were not: the rule for
    logs in every command (an unreadable or foreign line is skipped and counted, and the
    command fails only when no record is left)."""
    out, skipped = [], 0
    for obj in lines:
        try:
            out.extend(parse_records([obj]))
        except MetricsError:
            skipped += 1
    return out, skipped
