"""The control plane of Bedrock Batch Inference (create, get, list and stop model
invocation jobs, on the `bedrock` service's paths).

A job reads its Anthropic-messages records from S3 (any S3 endpoint, e.g. moto on
loopback), answers each as Converse would and writes `<output>/<job id>/<input name>.out`
plus `manifest.json.out`, in a background thread.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fake_bedrock.errors import BedrockError
from fake_bedrock.translate import (
    anthropic_to_converse,
    converse_to_anthropic,
    converse_to_nova,
    is_nova_body,
    nova_to_converse,
)

if TYPE_CHECKING:
    from fake_bedrock.server import LocalBedrock

ACCOUNT_ID = "123456789012"
TERMINAL_JOB_STATUSES = frozenset(
    {"Completed", "Failed", "Stopped", "PartiallyCompleted", "Expired"}
)
_JOB_NAME = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_S3_URI = re.compile(r"s3://([a-z0-9][-.a-z0-9]{1,61}[a-z0-9])(?:/(.*))?")
_JOB_ID = re.compile(
    r"(?:arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?([a-z0-9]{12})"
)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def loopback_s3_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client for a local S3 (moto on loopback) with dummy credentials: the one
    the jobs read and write through, and the one the tests inspect the bucket with."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key or prefix) of an `s3://` URI; raises BedrockError if malformed."""
    m = _S3_URI.fullmatch(uri) if isinstance(uri, str) else None
    if m is None:
        raise BedrockError(400, "ValidationException", f"invalid S3 URI: {uri!r}")
    return m.group(1), m.group(2) or ""


@dataclass
class BatchJob:
    """One model invocation job as the control plane reports it."""

    job_id: str
    name: str
    model_id: str
    role_arn: str
    token: str | None
    input_uri: str
    output_uri: str
    submit_time: float
    status: str = "Submitted"
    message: str | None = None
    last_modified: float = 0.0
    end_time: float | None = None
    total: int = 0
    processed: int = 0
    success: int = 0
    errors: int = 0
    stop_requested: bool = False

    @property
    def arn(self) -> str:
        return f"arn:aws:bedrock:us-east-1:{ACCOUNT_ID}:model-invocation-job/{self.job_id}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "jobArn": self.arn,
            "jobName": self.name,
            "modelId": self.model_id,
            "roleArn": self.role_arn,
            "status": self.status,
            "submitTime": _iso(self.submit_time),
            "lastModifiedTime": _iso(self.last_modified or self.submit_time),
            "inputDataConfig": {
                "s3InputDataConfig": {"s3Uri": self.input_uri, "s3InputFormat": "JSONL"}
            },
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": self.output_uri}},
            "timeoutDurationInHours": 24,
            "jobExpirationTime": _iso(self.submit_time + 24 * 3600),
            "modelInvocationType": "InvokeModel",
            "totalRecordCount": self.total,
            "processedRecordCount": self.processed,
            "successRecordCount": self.success,
            "errorRecordCount": self.errors,
        }
        if self.token:
            d["clientRequestToken"] = self.token
        if self.message:
            d["message"] = self.message
        if self.end_time is not None:
            d["endTime"] = _iso(self.end_time)
        return d


class BatchJobs:
    """Model invocation jobs: validated on create, run one at a time by a worker thread.

    A job waits `start_delay_s` in Submitted (tests use it to interrupt a labeling run
    while its jobs are pending), then reads every `.jsonl` object at its input URI.

    Injected faults beside the server's per-record `error_rate`: `create_throttle_rate`
    of CreateModelInvocationJob calls answer ThrottlingException (nothing is created),
    and `job_failure_rate` of jobs end Failed without output. `stats` counts creates."""

    def __init__(
        self, service: LocalBedrock, s3_endpoint_url: str | None, start_delay_s: float = 0.0
    ) -> None:
        self.service = service
        self.s3_endpoint_url = s3_endpoint_url
        self.start_delay_s = start_delay_s
        self.jobs: dict[str, BatchJob] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[str] = []
        self._worker: threading.Thread | None = None
        self.create_throttle_rate = 0.0
        self.job_failure_rate = 0.0

    def _draw(self) -> float:
        with self.service._lock:
            return self.service._rng.random()

    # ---- control plane
    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        for k in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if k not in body:
                raise BedrockError(400, "ValidationException", f"{k} is required")
        name, role, model_id = body["jobName"], body["roleArn"], body["modelId"]
        if not isinstance(name, str) or not _JOB_NAME.fullmatch(name) or len(name) > 63:
            raise BedrockError(400, "ValidationException", f"invalid jobName {name!r}")
        if not isinstance(role, str) or not _ROLE_ARN.fullmatch(role):
            raise BedrockError(400, "ValidationException", f"invalid roleArn {role!r}")
        if model_id not in self.service.index.tier_by_model:
            raise BedrockError(400, "ValidationException", f"model {model_id!r} is not supported")
        try:
            in_uri = body["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
            out_uri = body["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        except (KeyError, TypeError):
            raise BedrockError(
                400, "ValidationException", "S3 input/output config is required"
            ) from None
        split_s3_uri(in_uri)
        split_s3_uri(out_uri)
        token = body.get("clientRequestToken")
        if self.create_throttle_rate and self._draw() < self.create_throttle_rate:
            self.service._count("batch_create_throttled")
            raise BedrockError(429, "ThrottlingException", "Too many requests, please wait.")
        self.service._count("batch_create_calls")
        with self._lock:
            for job in self.jobs.values():
                if token and job.token == token:
                    return {"jobArn": job.arn}  # an idempotent retry of the same create
                if job.name == name:
                    raise BedrockError(400, "ConflictException", f"a job named {name!r} exists")
            self.service._count("batch_jobs_created")
            job = BatchJob(
                job_id=uuid.uuid4().hex[:12],
                name=name,
                model_id=model_id,
                role_arn=role,
                token=token,
                input_uri=in_uri,
                output_uri=out_uri,
                submit_time=time.time(),
            )
            self.jobs[job.job_id] = job
            self._pending.append(job.job_id)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True)
                self._worker.start()
            self._wake.notify_all()
        return {"jobArn": job.arn}

    def _find(self, ident: str) -> BatchJob:
        m = _JOB_ID.fullmatch(ident)
        job = self.jobs.get(m.group(1)) if m else None
        if job is None:
            raise BedrockError(404, "ResourceNotFoundException", f"job {ident!r} not found")
        return job

    def get(self, ident: str) -> dict[str, Any]:
        with self._lock:
            return self._find(ident).to_dict()

    def stop(self, ident: str) -> dict[str, Any]:
        with self._lock:
            job = self._find(ident)
            if job.status in TERMINAL_JOB_STATUSES:
                raise BedrockError(400, "ConflictException", f"job is already {job.status}")
            job.stop_requested = True
            job.status = "Stopping"
            job.last_modified = time.time()
        return {}

    def list(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        def one(k: str) -> str | None:
            v = query.get(k)
            return v[0] if v else None

        name, status = one("nameContains"), one("statusEquals")
        try:
            max_results = int(one("maxResults") or 1000)
            start = int(one("nextToken") or 0)
        except ValueError:
            raise BedrockError(400, "ValidationException", "bad maxResults or nextToken") from None
        with self._lock:
            jobs = [
                j
                for j in self.jobs.values()
                if (name is None or name in j.name) and (status is None or j.status == status)
            ]
            jobs.sort(key=lambda j: j.submit_time, reverse=one("sortOrder") != "Ascending")
            page = [j.to_dict() for j in jobs[start : start + max_results]]
        out: dict[str, Any] = {"invocationJobSummaries": page}
        if start + max_results < len(jobs):
            out["nextToken"] = str(start + max_results)
        return out

    # ---- the worker
    def _set(self, job: BatchJob, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(job, k, v)
            job.last_modified = time.time()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._wake.wait()
                job = self.jobs[self._pending.pop(0)]
            wait_until = job.submit_time + self.start_delay_s
            while time.time() < wait_until and not job.stop_requested:
                time.sleep(min(0.05, max(0.0, wait_until - time.time())))
            try:
                self._run(job)
            except BedrockError as e:
                self._set(job, status="Failed", message=e.message, end_time=time.time())
            except Exception as e:  # keep the worker alive; the job reports the failure
                self._set(
                    job, status="Failed", message=f"{type(e).__name__}: {e}", end_time=time.time()
                )

    def _run(self, job: BatchJob) -> None:
        if job.stop_requested:
            self._set(job, status="Stopped", end_time=time.time())
            return
        if not self.s3_endpoint_url:
            raise BedrockError(400, "ValidationException", "this local server has no S3 endpoint")
        self._set(job, status="Validating")
        if self.job_failure_rate and self._draw() < self.job_failure_rate:
            raise BedrockError(500, "InternalServerException", "injected job failure")
        s3 = loopback_s3_client(self.s3_endpoint_url)
        bucket, key = split_s3_uri(job.input_uri)
        if key.endswith(".jsonl"):
            inputs, prefix = [key], key[: key.rfind("/") + 1]
        else:
            prefix = key if not key or key.endswith("/") else key + "/"
            inputs = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                inputs += [
                    o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl")
                ]
        if not inputs:
            raise BedrockError(400, "ValidationException", f"no .jsonl input at {job.input_uri}")
        out_bucket, out_prefix = split_s3_uri(job.output_uri)
        out_base = f"{out_prefix.rstrip('/')}/{job.job_id}/".lstrip("/")
        self._set(job, status="Scheduled")
        self._set(job, status="InProgress")
        in_tokens = out_tokens = 0
        for in_key in inputs:
            rel = in_key[len(prefix) :]
            with tempfile.TemporaryFile("w+b") as out:
                body = s3.get_object(Bucket=bucket, Key=in_key)["Body"]
                for line in body.iter_lines():
                    if job.stop_requested:
                        break
                    if not line.strip():
                        continue
                    rec = self._record(job.model_id, line)
                    if "modelOutput" in rec:
                        u = rec["modelOutput"]["usage"]
                        in_tokens += u.get("input_tokens", u.get("inputTokens", 0))
                        out_tokens += u.get("output_tokens", u.get("outputTokens", 0))
                    out.write(json.dumps(rec).encode("utf-8") + b"\n")
                    with self._lock:
                        job.total += 1
                        job.processed += 1
                        job.success += "modelOutput" in rec
                        job.errors += "error" in rec
                out.seek(0)
                s3.upload_fileobj(out, out_bucket, out_base + rel + ".out")
            if job.stop_requested:
                break
        manifest = {
            "totalRecordCount": job.total,
            "processedRecordCount": job.processed,
            "successRecordCount": job.success,
            "errorRecordCount": job.errors,
            "inputTokenCount": in_tokens,
            "outputTokenCount": out_tokens,
        }
        s3.put_object(
            Bucket=out_bucket,
            Key=out_base + "manifest.json.out",
            Body=json.dumps(manifest).encode("utf-8"),
        )
        self._set(
            job, status="Stopped" if job.stop_requested else "Completed", end_time=time.time()
        )

    def _record(self, model_id: str, line: bytes) -> dict[str, Any]:
        """One output line: the input record with `modelOutput`, or `error` in its place."""
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("a record must be a JSON object")
        except ValueError as e:
            return {
                "recordId": uuid.uuid4().hex[:11].upper(),
                "error": {"errorCode": 400, "errorMessage": f"malformed record: {e}"},
            }
        out: dict[str, Any] = {
            "recordId": rec.get("recordId") or uuid.uuid4().hex[:11].upper(),
            "modelInput": rec.get("modelInput"),
        }
        with self.service._lock:
            self.service.stats["batch_records"] += 1
            failed = self.service._rng.random() < self.service.faults.error_rate
        try:
            if failed:
                raise BedrockError(500, "InternalServerException", "Internal server error.")
            body = rec.get("modelInput")
            if is_nova_body(body):
                out["modelOutput"] = converse_to_nova(
                    self.service.answer(model_id, nova_to_converse(body))
                )
            else:
                resp = self.service.answer(model_id, anthropic_to_converse(body))
                out["modelOutput"] = converse_to_anthropic(resp, model_id)
        except BedrockError as e:
            out["error"] = {"errorCode": e.status, "errorMessage": e.message}
        return out
