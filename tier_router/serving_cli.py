"""`tier-router local-bedrock | demo | feedback`: argument parsing and validation only.

Every argument is checked before any work starts; a bad one exits with code 2 and a
message naming the flag (argparse's own format: "argument --flag: ...").
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from outcomes import OutcomesError, read_outcomes
from router.ladder import Ladder, LadderError
from tier_router.argtypes import (
    DefaultsHelpFormatter,
    add_grades,
    add_logs,
    add_prompt_storage,
    add_tiers,
    prompt_storage_error,
)
from tier_router.argtypes import existing_dir as _existing_dir
from tier_router.argtypes import existing_file as _existing_file
from tier_router.argtypes import int_in as _int_in
from tier_router.argtypes import new_file as _new_file
from tier_router.argtypes import nonneg_float as _nonneg_float
from tier_router.argtypes import rate as _rate


def _fail(cmd: str, message: str) -> int:
    print(f"tier-router {cmd}: error: {message}", file=sys.stderr)
    return 2


def _load_ladder(cmd: str, path: Path) -> Ladder | int:
    try:
        return Ladder.load(path)
    except LadderError as e:
        return _fail(cmd, f"--ladder: {e}")


def _add_faults(p: argparse.ArgumentParser, throttled: str, errors: str) -> None:
    """The local Bedrock's injected faults (`FaultConfig`), as `local-bedrock` and `demo`
    take them; only the help wording differs."""
    p.add_argument("--throttle-rate", type=_rate, default=0.0, help=throttled)
    p.add_argument("--error-rate", type=_rate, default=0.0, help=errors)
    p.add_argument("--latency-ms", type=_nonneg_float, default=0.0, help="delay added per call")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the serving subcommands to the main `tier-router` parser."""
    p = subparsers.add_parser(
        "local-bedrock",
        help="serve a local Bedrock-compatible Converse API from an outcomes file",
        description="Answer Converse calls as the recorded models did, with injected faults.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--outcomes", type=_existing_file, required=True, help="outcomes file")
    add_tiers(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_int_in(0, 65535), default=0, help="TCP port, 0 = any free port")
    _add_faults(p, throttled="share of calls -> 429", errors="share of calls -> 500/503")
    p.add_argument(
        "--seed", type=_int_in(0, 2**32 - 1), default=0, help="seeds the injected faults"
    )
    p.set_defaults(func=cmd_local_bedrock)

    p = subparsers.add_parser(
        "demo",
        help="route N recorded prompts through the tiered client and a local Bedrock",
        description="Offline end-to-end run; prints one JSON summary line to stdout.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--bundle", type=_existing_dir, required=True, help="router bundle dir")
    p.add_argument("--outcomes", type=_existing_file, required=True, help="outcomes file")
    p.add_argument("--split", default="test", help="which split's prompts to send")
    p.add_argument("--requests", type=_int_in(1, 1_000_000), default=400, help="prompts to send")
    _add_faults(
        p,
        throttled="share of calls the server throttles",
        errors="share of calls that get a 500/503",
    )
    p.add_argument(
        "--log",
        type=_new_file,
        default=None,
        help="outcome log to write, a new file (default: one in a new temp directory)",
    )
    p.add_argument(
        "--seed",
        type=_int_in(0, 2**32 - 1),
        default=0,
        help="seeds the prompt sample, the injected faults and the client",
    )
    p.add_argument(
        "--max-attempts", type=_int_in(1, 20), default=4, help="calls per tier, incl. the first"
    )
    p.add_argument(
        "--retry-delay-scale",
        type=_nonneg_float,
        default=0.02,
        help="multiplies botocore's backoff (default 0.02: 20 ms instead of 1 s)",
    )
    p.add_argument(
        "--threads", type=_int_in(1, 256), default=1, help="requests in flight at once"
    )
    p.add_argument(
        "--swap-to",
        type=_existing_dir,
        default=None,
        help="a second bundle to hot-swap to mid-run, under load (same ladder; it must "
        "keep the cascade if the first has one)",
    )
    p.add_argument(
        "--swap-after",
        type=_int_in(1, 1_000_000),
        default=None,
        help="swap once this many requests have completed (default: half of --requests)",
    )
    p.add_argument(
        "--grades-out",
        type=_new_file,
        default=None,
        help="also write the logged answers' grades (the recorded scores, standing in for "
        "a downstream check) as JSONL for feedback/retrain --grades",
    )
    p.add_argument(
        "--batch",
        action="store_true",
        help="run the routed batch path (Batch jobs per tier over a local S3) instead; "
        "--error-rate then fails records and jobs, --throttle-rate job creations",
    )
    add_prompt_storage(p)
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser(
        "feedback",
        help="turn outcome logs into an outcomes file for retraining",
        description="Labels by training/log_labels.py's rules: graded answers -> their grade; in "
        "plain ladder logs passed checks -> 1, failed -> 0; a cascade's ungraded verdicts "
        "and untried tiers -> absent.",
        formatter_class=DefaultsHelpFormatter,
    )
    add_logs(p)
    add_grades(p)
    add_tiers(p)
    p.add_argument("--out", required=True, help="outcomes file to write (.jsonl or .jsonl.gz)")
    p.add_argument("--split", default="train", help="split to give the records")
    p.set_defaults(func=cmd_feedback)


def cmd_local_bedrock(args: argparse.Namespace) -> int:
    from fake_bedrock import FaultConfig, LocalBedrock, OutcomeIndex

    ladder = _load_ladder("local-bedrock", args.tiers)
    if isinstance(ladder, int):
        return ladder
    try:
        records = read_outcomes(args.outcomes)
    except OutcomesError as e:
        return _fail("local-bedrock", f"--outcomes: {e}")
    faults = FaultConfig(args.throttle_rate, args.error_rate, args.latency_ms, args.seed)
    try:
        server = LocalBedrock(ladder, OutcomeIndex(records, ladder), faults, args.host, args.port)
    except OSError as e:
        return _fail("local-bedrock", f"--port {args.port}: cannot listen: {e.strerror or e}")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(
        json.dumps({"url": server.url, "port": server.port, "prompts": len(server.index)}),
        flush=True,
    )
    print(f"local-bedrock: listening on {server.url} (Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print(f"local-bedrock: stopped; {dict(server.stats)}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from serving.demo import DemoConfig, load_router, main_json, run_demo

    try:
        router = load_router(str(args.bundle))
    except Exception as e:
        return _fail("demo", f"--bundle {args.bundle}: cannot load router: {e}")
    # A made-up log directory is kept after a run on purpose: the log is the demo's output
    # (retrain reads it). It is removed when the run fails before logging anything.
    scratch = None
    log = args.log
    if log is None:
        scratch = Path(tempfile.mkdtemp(prefix="tier-router-demo-"))
        log = scratch / "outcomes.jsonl"
    cfg = DemoConfig(
        bundle=str(args.bundle),
        outcomes=str(args.outcomes),
        log=str(log),
        split=args.split,
        requests=args.requests,
        throttle_rate=args.throttle_rate,
        error_rate=args.error_rate,
        latency_ms=args.latency_ms,
        seed=args.seed,
        max_attempts=args.max_attempts,
        retry_delay_scale=args.retry_delay_scale,
        threads=args.threads,
        swap_to=None if args.swap_to is None else str(args.swap_to),
        swap_after=args.swap_after or max(1, args.requests // 2),
        prompt_storage=args.prompt_storage,
        grades_out=None if args.grades_out is None else str(args.grades_out),
    )
    if args.swap_after is not None and args.swap_to is None:
        return _fail("demo", "--swap-after needs --swap-to")
    storage_error = prompt_storage_error(args.prompt_storage)
    if storage_error:
        return _fail("demo", storage_error)
    if args.batch and (args.swap_to is not None or args.threads != 1):
        return _fail("demo", "--batch runs Batch jobs: --swap-to and --threads do not apply")
    try:
        if args.batch:
            from serving.batch_demo import run_batch_demo

            summary = run_batch_demo(cfg, router)
        else:
            summary = run_demo(cfg, router)
    except (OutcomesError, ValueError) as e:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        flags = "--outcomes" if isinstance(e, OutcomesError) else "--outcomes/--split"
        return _fail("demo", f"{flags}: {e}")
    summary.update(goal_check(router, summary))
    note = goal_note(summary)
    if note:
        print(note, file=sys.stderr)
    print(main_json(summary), flush=True)
    return 0


def goal_note(summary: dict[str, Any]) -> str | None:
    """What to tell a person when the demo's draw missed the bundle's goal (else None)."""
    if summary.get("goal_met") is not False:
        return None
    return (
        f"demo: goal {summary['goal']!r} not met on this draw: quality "
        f"{summary['quality']:.4f} against a target of {summary['goal_quality']:.4f} "
        f"({summary['goal_gap_points']:+.2f} points); the policy was fitted to meet it on "
        f"the training split's out-of-fold predictions, and a draw of {summary['requests']} "
        "prompts moves quality by about a point either way"
    )


def goal_check(router: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """The bundle's goal read on the demo's own prompts: its target quality (the goal
    tier's recorded quality on them, less the goal's points) and whether it was met."""
    from training.policy_fit import parse_goal

    text = getattr(getattr(router, "policy", None), "goal", None)
    try:
        goal = parse_goal(str(text), router.ladder)
    except (ValueError, AttributeError):
        return {"goal": text, "goal_quality": None, "goal_met": None}
    always = summary.get("always_quality") or {}
    tier_q = always.get(router.ladder.names[goal.tier_index])
    if tier_q is None:
        return {"goal": goal.text, "goal_quality": None, "goal_met": None}
    target = round(tier_q - goal.points / 100.0, 4)
    return {
        "goal": goal.text,
        "goal_quality": target,
        "goal_gap_points": round((summary["quality"] - target) * 100, 2),
        "goal_met": bool(summary["quality"] >= target - 1e-9),
    }


def cmd_feedback(args: argparse.Namespace) -> int:
    from training.feedback import build_outcomes
    from training.log_labels import Grades, GradeStats

    ladder = _load_ladder("feedback", args.tiers)
    if isinstance(ladder, int):
        return ladder
    out = Path(args.out)
    if not out.parent.is_dir():
        return _fail("feedback", f"--out: directory {out.parent} does not exist")
    if out.resolve() in {Path(p).resolve() for p in args.log}:
        return _fail("feedback", "--out must not be one of the --log files")
    started = time.monotonic()
    from serving.log_source import LogSourceError

    gstats = GradeStats()
    try:
        grades = Grades.load(args.grades, gstats) if args.grades else Grades()
        stats = build_outcomes(args.log, ladder, out, split=args.split, grades=grades)
    except (OSError, LogSourceError) as e:
        return _fail("feedback", f"--log/--grades/--out: {e}")
    elapsed = round(time.monotonic() - started, 2)
    summary = {**stats.to_dict(), "out": str(out), "seconds": elapsed, "elapsed_s": elapsed}
    if args.grades:
        summary["grades"] = gstats.to_dict()
        if gstats.bad_lines or gstats.bad_grades:
            print(
                f"feedback: skipped {gstats.bad_lines} unreadable grade line(s) and "
                f"{gstats.bad_grades} line(s) that are not grades",
                file=sys.stderr,
            )
    # The rule for logs in every command: unreadable and foreign lines are skipped and
    # counted; only a log with no outcome record at all is an error.
    foreign = stats.bad_lines + stats.skipped_not_outcome_record
    if stats.records_read - stats.skipped_not_outcome_record <= 0:
        out.unlink(missing_ok=True)
        return _fail(
            "feedback",
            f"--log: no outcome records in {', '.join(map(str, args.log))} ({stats.bad_lines} "
            f"unreadable line(s), {stats.skipped_not_outcome_record} JSON line(s) that are not "
            "outcome records)",
        )
    if foreign:
        print(
            f"feedback: skipped {stats.bad_lines} unreadable line(s) and "
            f"{stats.skipped_not_outcome_record} line(s) that are not outcome records",
            file=sys.stderr,
        )
    if stats.skipped_prompt_hashed or stats.skipped_prompt_dropped:
        print(
            "feedback: records whose prompt was hashed or dropped cannot become training "
            "data; log with prompt storage 'store' to use them",
            file=sys.stderr,
        )
    if stats.skipped_prompt_features:
        print(
            f"feedback: skipped {stats.skipped_prompt_features} record(s) logged with the "
            "router's prompt features instead of the text (the default): an outcomes file "
            "needs the text; `retrain --log` (or `table`, then `retrain --table`) trains "
            "from the features",
            file=sys.stderr,
        )
    print(json.dumps(summary), flush=True)
    return 0
