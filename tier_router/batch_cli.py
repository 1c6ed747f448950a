"""`tier-router batch`: routed batch serving over Bedrock Batch Inference.

Arguments and the input file are checked before anything is submitted; a bad one exits
with code 2 and a message naming the flag or the input line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tier_router.argtypes import (
    DefaultsHelpFormatter,
    add_bundle,
    add_prompt_storage,
    prompt_storage_error,
)
from tier_router.argtypes import existing_file as _existing_file
from tier_router.argtypes import int_in as _int_in
from tier_router.argtypes import positive_float as _positive_float


def _fail(message: str) -> int:
    print(f"tier-router batch: error: {message}", file=sys.stderr)
    return 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="route a JSONL of records, one Bedrock Batch job per tier, judge, escalate",
        description=(
            "Routed batch serving: every record is routed, each tier gets its own Batch "
            "job, the bundle's cascade judges the answers and the rejected ones go up in "
            "further rounds, at the batch price. Resumable: re-run the same command."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    add_bundle(p)
    p.add_argument(
        "--input",
        type=_existing_file,
        required=True,
        help='JSONL: {"id", "prompt" | "messages", ["system", "max_tokens", "tags"]}',
    )
    p.add_argument("--out", type=Path, required=True, help="answers JSONL to write")
    p.add_argument("--log", type=Path, required=True, help="outcome log (JSONL) to append to")
    p.add_argument(
        "--state",
        default=None,
        help="state file, a path or s3://BUCKET/KEY (default: <out>.batch-state.json)",
    )
    p.add_argument("--bucket", required=True, help="S3 bucket for batch input/output files")
    p.add_argument("--role-arn", required=True, help="IAM role Bedrock batch jobs assume")
    p.add_argument("--s3-prefix", default="tier-router-batch", help="key prefix in --bucket")
    p.add_argument("--job-prefix", default="route", help="batch job names start with this")
    p.add_argument(
        "--records-per-job",
        type=_int_in(1, 50_000),
        default=10_000,
        help="records per job (Bedrock's quota is 50,000; larger groups are split)",
    )
    p.add_argument(
        "--max-jobs-in-flight", type=_int_in(1, 1000), default=10, help="jobs running at once"
    )
    p.add_argument(
        "--max-record-retries",
        type=_int_in(0, 20),
        default=3,
        help="rounds a failed record is retried on a model before it counts as unavailable",
    )
    p.add_argument("--cascade-point", default="policy", help="the bundle's cascade operating point")
    p.add_argument(
        "--poll-seconds", type=_positive_float, default=30.0, help="seconds between job polls"
    )
    p.add_argument("--endpoint-url", default=None, help="Bedrock endpoint (default: AWS's)")
    p.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (default: AWS's)")
    p.add_argument("--region", default="us-east-1", help="AWS region of Bedrock and S3")
    p.add_argument(
        "--dummy-credentials",
        action="store_true",
        help="sign with fixed fake keys (local server and moto only)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    add_prompt_storage(p)
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from labeling.clients import control_client, s3_client
    from labeling.config import AwsConfig
    from serving.batch_input import BatchInputError, read_items
    from serving.batch_run import BatchClients, BatchRunConfig, BatchRunError, BatchRunner
    from serving.batch_run_state import BatchStateError, StateStore
    from serving.batch_walk import Judge
    from serving.cascade_run import find_cascade
    from serving.checks import builtin_checks
    from serving.demo import load_router
    from serving.outcome_log import JsonlSink, OutcomeLogger, PromptStorage

    storage_error = prompt_storage_error(args.prompt_storage)
    if storage_error:
        return _fail(storage_error)
    for flag, path in (("--out", args.out), ("--log", args.log)):
        if not path.parent.is_dir():
            return _fail(f"{flag}: directory {path.parent} does not exist")
    try:
        items = read_items(args.input)  # every line checked before anything is submitted
    except BatchInputError as e:
        return _fail(f"--input: {e}")
    try:
        router = load_router(str(args.bundle))
    except Exception as e:
        return _fail(f"--bundle {args.bundle}: cannot load router: {e}")
    try:
        cfg = BatchRunConfig(
            bucket=args.bucket,
            role_arn=args.role_arn,
            s3_prefix=args.s3_prefix,
            job_prefix=args.job_prefix,
            records_per_job=args.records_per_job,
            max_jobs_in_flight=args.max_jobs_in_flight,
            poll_interval_s=args.poll_seconds,
            max_record_retries=args.max_record_retries,
            progress=not args.no_progress,
            prompt_storage=PromptStorage(args.prompt_storage),
        )
        cascade = find_cascade(router, args.cascade_point)
    except ValueError as e:
        return _fail(str(e))
    aws = AwsConfig(
        region=args.region,
        endpoint_url=args.endpoint_url,
        s3_endpoint_url=args.s3_endpoint_url,
        dummy_credentials=args.dummy_credentials,
    )
    clients = BatchClients(control_client(aws), s3_client(aws))
    location = args.state or str(args.out.with_name(args.out.name + ".batch-state.json"))
    try:
        store = StateStore(location, clients.s3)
    except BatchStateError as e:
        return _fail(f"--state: {e}")
    judge = Judge(router.ladder, cascade, builtin_checks())
    logger = OutcomeLogger([JsonlSink(args.log)])
    try:
        summary = BatchRunner(cfg, router, judge, clients, store).run(
            args.input, items, args.out, logger
        )
    except (BatchRunError, BatchStateError) as e:
        print(f"tier-router batch: {e}", file=sys.stderr)
        return 1
    finally:
        logger.close()
    print(json.dumps(summary.to_dict()), flush=True)
    return 0 if summary.failed == 0 else 1
