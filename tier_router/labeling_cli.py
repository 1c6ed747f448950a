"""`tier-router label`: argument parsing and validation, then one run.

Every argument is checked before any call is made; a bad one exits 2 naming the flag.
Exit codes: 0 done, 1 some prompts failed (re-run retries them) or a service call failed
(S3 or Bedrock unreachable or refusing; one line says which call and why), 2 bad
arguments or input (incl. a --bucket that S3 does not have), 3 spend cap reached, 4 batch
jobs still running (re-run resumes), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from labeling.config import STRATEGIES, AwsConfig, BatchConfig, LabelConfig
from labeling.graders import GRADER_NAMES, GraderSet, JudgeConfig, JudgeGrader, parse_grader_spec
from labeling.prompts import PromptsError
from outcomes import OutcomesError
from router.ladder import Ladder, LadderError
from tier_router.argtypes import DefaultsHelpFormatter, add_tiers
from tier_router.argtypes import existing_file as _existing_file
from tier_router.argtypes import int_in as _int_in
from tier_router.argtypes import positive_float as _positive_float


def _prices(value: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected IN,OUT dollars per Mtok, got {value!r}"
        ) from None
    if min(a, b) < 0 or not (math.isfinite(a) and math.isfinite(b)):
        raise argparse.ArgumentTypeError(f"prices must be >= 0, got {value}")
    return a, b


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `label` to the main `tier-router` parser."""
    p = subparsers.add_parser(
        "label",
        help="run the tiers on new prompts, grade the answers, write an outcomes file",
        description=(
            "Label prompts by running every tier (or cheapest-first until one passes), "
            "on demand or with Bedrock Batch Inference (about half the price)."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--prompts", type=_existing_file, required=True, help="prompts JSONL")
    add_tiers(p)
    p.add_argument("--out", type=Path, required=True, help="outcomes file to write (.jsonl)")
    p.add_argument(
        "--grader",
        required=True,
        help=f"NAME[:ARG], NAME one of {', '.join(GRADER_NAMES)} "
        "(numeric:REL_TOL, regex:PATTERN, json_schema:SCHEMA_FILE)",
    )
    p.add_argument(
        "--task-grader",
        action="append",
        default=[],
        metavar="TASK=SPEC",
        help="grader for prompts of one task (repeatable)",
    )
    p.add_argument(
        "--mode",
        choices=("ondemand", "batch"),
        default="ondemand",
        help="Converse calls now, or Bedrock Batch Inference jobs through S3",
    )
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="all",
        help="all: every tier answers every prompt; cascade: cheapest first, stop at a pass",
    )
    p.add_argument("--concurrency", type=_int_in(1, 256), default=8, help="calls in flight")
    p.add_argument(
        "--spend-cap",
        type=_positive_float,
        default=None,
        help="start no new prompt once this many USD are spent (default: no cap)",
    )
    p.add_argument(
        "--judge-model",
        default=None,
        help="tier name or model id for the judge grader (default: no judge)",
    )
    p.add_argument(
        "--judge-prices",
        type=_prices,
        default=None,
        metavar="IN,OUT",
        help="judge $/Mtok if the judge model is not a tier",
    )
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="Bedrock endpoint, e.g. a local-bedrock server's url (default: AWS's)",
    )
    p.add_argument(
        "--s3-endpoint-url", default=None, help="S3 endpoint, e.g. moto offline (default: AWS's)"
    )
    p.add_argument("--region", default="us-east-1", help="AWS region of Bedrock and S3")
    p.add_argument(
        "--dummy-credentials",
        action="store_true",
        help="sign with fixed fake keys (local server and moto only)",
    )
    p.add_argument(
        "--max-attempts", type=_int_in(1, 20), default=6, help="tries per call, incl. the first"
    )
    p.add_argument(
        "--retry-delay-scale", type=float, default=1.0, help="multiplies botocore's backoff"
    )
    p.add_argument("--bucket", default=None, help="S3 bucket for batch input/output (batch)")
    p.add_argument("--role-arn", default=None, help="IAM role Bedrock batch jobs assume (batch)")
    p.add_argument(
        "--s3-prefix", default="tier-router-label", help="key prefix of batch files in --bucket"
    )
    p.add_argument("--job-prefix", default="label", help="batch job names start with this")
    p.add_argument(
        "--poll-seconds",
        type=_positive_float,
        default=30.0,
        help="seconds between batch job status checks",
    )
    p.add_argument(
        "--max-wait-minutes",
        type=_positive_float,
        default=None,
        help="stop polling after this long (exit 4; re-run resumes; default: wait until done)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_label)


def _fail(message: str) -> int:
    print(f"tier-router label: error: {message}", file=sys.stderr)
    return 2


def _judge(args: argparse.Namespace, ladder: Ladder, runtime: Any) -> JudgeGrader | None:
    if not args.judge_model:
        return None
    tier = next((t for t in ladder.tiers if args.judge_model in (t.name, t.model_id)), None)
    if tier is not None:
        prices = args.judge_prices or (tier.price_in_per_mtok, tier.price_out_per_mtok)
        model_id = tier.model_id
    elif args.judge_prices is not None:
        prices, model_id = args.judge_prices, args.judge_model
    else:
        raise ValueError(
            f"--judge-model {args.judge_model!r} is not a tier of the ladder; give --judge-prices"
        )
    return JudgeGrader(JudgeConfig(model_id, prices[0], prices[1]), runtime)


def build_graders(args: argparse.Namespace, ladder: Ladder, runtime: Any) -> GraderSet:
    judge = _judge(args, ladder, runtime)
    default = parse_grader_spec(args.grader, judge)
    by_task = {}
    for spec in args.task_grader:
        task, eq, g = spec.partition("=")
        if not eq or not task:
            raise ValueError(f"--task-grader expects TASK=SPEC, got {spec!r}")
        by_task[task] = parse_grader_spec(g, judge)
    return GraderSet(default, by_task)


def cmd_label(args: argparse.Namespace) -> int:
    from labeling.batch import BatchClients, run_batch
    from labeling.clients import control_client, runtime_client, s3_client
    from labeling.ondemand import run_ondemand

    try:
        ladder = Ladder.load(args.tiers)
    except LadderError as e:
        return _fail(f"--ladder: {e}")
    if not args.out.parent.is_dir():
        return _fail(f"--out: directory {args.out.parent} does not exist")
    if args.out.suffix == ".gz":
        return _fail("--out: write plain .jsonl (the on-demand output is appended to)")
    if args.mode == "batch" and not (args.bucket and args.role_arn):
        return _fail("--mode batch needs --bucket and --role-arn")
    aws = AwsConfig(
        region=args.region,
        endpoint_url=args.endpoint_url,
        s3_endpoint_url=args.s3_endpoint_url,
        max_attempts=args.max_attempts,
        retry_delay_scale=args.retry_delay_scale,
        dummy_credentials=args.dummy_credentials,
    )
    try:
        cfg = LabelConfig(
            prompts=args.prompts,
            out=args.out,
            strategy=args.strategy,
            concurrency=args.concurrency,
            spend_cap_usd=args.spend_cap,
            progress=not args.no_progress,
        )
        bcfg = (
            BatchConfig(
                bucket=args.bucket,
                role_arn=args.role_arn,
                s3_prefix=args.s3_prefix,
                job_prefix=args.job_prefix,
                poll_interval_s=args.poll_seconds,
                max_wait_s=None if args.max_wait_minutes is None else args.max_wait_minutes * 60,
            )
            if args.mode == "batch"
            else None
        )
        runtime = runtime_client(aws, pool=args.concurrency + 4)
        graders = build_graders(args, ladder, runtime)
    except ValueError as e:
        return _fail(str(e))
    try:
        if bcfg is None:
            summary = run_ondemand(cfg, ladder, graders, runtime)
        else:
            clients = BatchClients(control_client(aws), s3_client(aws), runtime)
            summary = run_batch(cfg, bcfg, ladder, graders, clients)
    except (PromptsError, OutcomesError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("tier-router label: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # a boto/S3 failure outside a single prompt: say what, not a trace
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        from labeling.batch import BatchError, BatchUsageError
        from labeling.batch_state import StateError

        if isinstance(e, BatchUsageError):
            return _fail(str(e))
        if isinstance(e, Boto3Error | BotoCoreError | ClientError | BatchError | StateError):
            print(f"tier-router label: error: {e}", file=sys.stderr)
            return 1
        raise
    d = summary.to_dict()
    print(json.dumps(d), flush=True)
    print(
        f"tier-router label: {summary.status}: {summary.message}. Cost ${d['cost_usd']:.4f} "
        f"({summary.mode}); the tier calls cost ${d['ondemand_cost_usd']:.4f} on demand vs "
        f"${d['batch_cost_usd']:.4f} in batch",
        file=sys.stderr,
    )
    return summary.exit_code
