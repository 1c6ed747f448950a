"""`tier-router monitor`: live metrics and drift from outcome logs.

Prints one line per window on stderr (tier mix, escalation rate, cost per request, latency,
calibration per tier); with `--bundle` it flags drift against the bundle's held-out
expectation (bounds in serving/metrics.py) and exits 1 when any window drifted.
`--emf` also writes CloudWatch Embedded Metric Format lines. Usage errors exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from serving.log_source import LogSourceError
from serving.metrics import (
    CALIBRATION_MARGIN,
    TV_BOUND,
    Z_BOUND,
    CalibrationLabels,
    Expectation,
    MetricsError,
    Window,
    check_drift,
    emf_lines,
    iter_records,
    iter_windows,
    peek_tier_names,
)
from serving.outcome_log import ReadStats, read_log
from serving.outcome_record import OutcomeLogRecord
from tier_router.argtypes import (
    DefaultsHelpFormatter,
    add_grades,
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
    add_grades(p)
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


def _calibration_labels(grades: list[str] | None) -> CalibrationLabels:
    """training/log_labels' rules for calibration, with the graded feedback joined."""
    from training.log_labels import Grades, calibration_labels

    g = Grades.load(grades) if grades else Grades()
    return functools.partial(calibration_labels, grades=g)


def cmd_monitor(a: argparse.Namespace) -> int:
    """One pass over the logs: windows are printed (and EMF lines written) as they close."""
    stats = ReadStats()
    try:
        exp = None if a.bundle is None else Expectation.from_bundle(a.bundle)
        labels = _calibration_labels(a.grades)
        counts = {"not_records": 0, "records": 0}
        records = _outcome_records(read_log(list(a.log), stats), counts)
        names, records = peek_tier_names(records)
        if exp is not None:
            names = list(exp.tiers)
        if names is None:
            if counts["records"] == 0:
                raise MetricsError(
                    f"no outcome records in {', '.join(map(str, a.log))} ({stats.bad_lines} "
                    f"unreadable line(s), {counts['not_records']} JSON line(s) that are not "
                    "outcome records)"
                )
            raise MetricsError("no record has a decision with per-tier p_pass")
        summaries: list[dict[str, Any]] = []
        with contextlib.ExitStack() as stack:
            emf = None if a.emf is None else stack.enter_context(a.emf.open("w", encoding="utf-8"))
            n_windows, drifted = 0, 0
            for w in iter_windows(records, a.window_s, a.window_requests, labels):
                n_windows += 1
                if exp is not None:
                    drifted += bool(check_drift(w, exp))
                if emf is not None:
                    emf.writelines(line + "\n" for line in emf_lines(w, names))
                summaries.append(_print_window(w, names))
    except (MetricsError, LogSourceError) as e:
        print(f"tier-router monitor: error: {e}", file=sys.stderr)
        return 2
    skipped = f", {stats.bad_lines} unreadable line(s) skipped" if stats.bad_lines else ""
    if counts["not_records"]:
        skipped += f", {counts['not_records']} line(s) that are not outcome records skipped"
    verdict = "no drift" if exp is None or not drifted else f"DRIFT in {drifted} window(s)"
    if exp is None:
        verdict += " checked (no --bundle)"
    print(
        f"monitor: {counts['records']} records, {n_windows} window(s){skipped}; {verdict}",
        file=sys.stderr,
    )
    if a.json:
        doc = {
            "records": counts["records"],
            "skipped_unreadable_lines": stats.bad_lines,
            "skipped_not_outcome_records": counts["not_records"],
            "drift_checked": exp is not None,
            "drifted_windows": drifted,
            "windows": summaries,
        }
        print(json.dumps(doc, indent=2))
    return 1 if drifted else 0


def _print_window(w: Window, names: list[str]) -> dict[str, Any]:
    """One window's line on stderr; its summary for --json."""
    s = w.summary(names)
    mix = " ".join(f"{t}={v:.2f}" for t, v in s["tier_mix"].items())
    started = " ".join(f"{t}={v:.2f}" for t, v in s["start_tier_mix"].items())
    cal = " ".join(
        f"{t}={c['predicted']:.2f}/{c['observed']:.2f}({c['labels']})"
        for t, c in s["calibration"].items()
        if c["labels"]
    )
    print(
        f"{s['start']} n={s['requests']} mix[{mix}] start[{started}] "
        f"esc={s['escalation_rate']:.3f} "
        f"cost/req=${s['cost_per_request_usd']:.6f} p50={s['latency_p50_ms']:.1f}ms "
        f"p99={s['latency_p99_ms']:.1f}ms cal(pred/obs)[{cal}]",
        file=sys.stderr,
        flush=True,
    )
    for finding in w.drift:
        print(f"  DRIFT {finding}", file=sys.stderr, flush=True)
    return s


def _outcome_records(
    lines: Iterable[dict[str, Any]], counts: dict[str, int]
) -> Iterator[OutcomeLogRecord]:
    """The lines that are outcome records, streamed; those that are not are counted in
    `counts["not_records"]`: the rule for logs in every command (an unreadable or foreign
    line is skipped and counted, and the command fails only when no record is left)."""
    for obj in lines:
        try:
            rec = next(iter_records([obj]))
        except MetricsError:
            counts["not_records"] += 1
            continue
        counts["records"] += 1
        yield rec
