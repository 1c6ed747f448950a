"""Batch mode: Bedrock Batch Inference, one model invocation job per tier.

Steps, each restartable (state in sqlite beside the output, see batch_state.py):
1. ingest the prompts (validated, duplicate ids refused) into the state file;
2. per tier, write `{"recordId", "modelInput"}` records (Anthropic messages bodies) to
   S3 and create a job named `<prefix>-<run id>-<tier>`, unless one by that name
   exists already (a restarted run finds its jobs with `list_model_invocation_jobs`);
   `all` submits every tier at once, `cascade` one tier per round, on the prompts no
   cheaper tier passed;
3. poll `get_model_invocation_job` until the jobs end;
4. stream `<output>/<job id>/<input>.out` back from S3, grade, upsert results;
5. rebuild the outcomes file from the state, atomically.
Everything streams through temp files and sqlite, so memory does not grow with the
number of prompts. The spend cap is checked before each job against a worst-case
estimate (every answer using max_tokens, at the batch price).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from labeling.answers import ModelAnswer
from labeling.batch_state import BatchState, JobRow, record_id, rid_of
from labeling.config import BatchConfig, LabelConfig
from labeling.graders import GradeError, GraderSet, Verdict
from labeling.invocation import anthropic_body, worst_case_cost
from labeling.prompts import PromptItem, iter_prompts
from labeling.results import BATCH_PRICE_FACTOR, RunSummary, outcome_record, tier_result
from outcomes import OutcomeRecord
from router.ladder import Ladder, Tier
from serving.batch_jobs import TERMINAL_STATUSES, TRANSFER, USABLE_STATUSES
from serving.batch_jobs import job_name as _job_name
from serving.progress import Progress

TERMINAL = TERMINAL_STATUSES
USABLE = USABLE_STATUSES


class BatchError(RuntimeError):
    """A batch step failed in a way a re-run will not fix by itself."""


class BatchUsageError(BatchError):
    """The arguments name something the service does not have (a bucket): exit 2."""


# S3 error codes that mean the --bucket argument is wrong, not that S3 is unwell.
_BUCKET_CODES = frozenset({"NoSuchBucket", "InvalidBucketName"})


def s3_failure(e: Exception, action: str, bucket: str, endpoint: str | None) -> BatchError:
    """One line saying which S3 call failed, where, and why (the boto error's own text)."""
    cause: BaseException = e
    if isinstance(e, S3UploadFailedError):  # boto3 wraps the ClientError it caught
        cause = e.__cause__ or e.__context__ or e
    code = cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None
    if code in _BUCKET_CODES:
        return BatchUsageError(f"--bucket: S3 bucket {bucket!r} {action} failed: {code}: {cause}")
    where = f" at {endpoint}" if endpoint else ""
    return BatchError(f"S3{where}: {action} failed: {type(cause).__name__}: {cause}")


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".batch-state.sqlite")


def run_id(prompts: Path, ladder: Ladder, strategy: str) -> str:
    """Names this run's jobs: the same prompts, ladder and strategy give the same id."""
    h = hashlib.sha256()
    with prompts.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(json.dumps([t.to_dict() for t in ladder.tiers], sort_keys=True).encode())
    h.update(strategy.encode())
    return h.hexdigest()[:12]


def job_name(bcfg: BatchConfig, rid: str, tier: Tier) -> str:
    return _job_name(bcfg.job_prefix, rid, tier.name)


@dataclass(frozen=True)
class BatchClients:
    bedrock: Any  # the `bedrock` control plane
    s3: Any
    runtime: Any | None = None  # only the judge grader calls it


class BatchRunner:
    def __init__(
        self,
        cfg: LabelConfig,
        bcfg: BatchConfig,
        ladder: Ladder,
        graders: GraderSet,
        clients: BatchClients,
        stderr: TextIO | None = None,
    ) -> None:
        self.cfg, self.bcfg, self.ladder, self.graders, self.c = cfg, bcfg, ladder, graders, clients
        self.err = stderr if stderr is not None else sys.stderr
        self.run_id = run_id(cfg.prompts, ladder, cfg.strategy)
        self.base = f"{bcfg.s3_prefix}/{self.run_id}"
        self.log = Progress(0, "label[batch]", self.err, cfg.progress)
        self._capped = False  # set when the spend cap kept a job from being created

    # ------------------------------------------------------------------ driver
    def run(self) -> RunSummary:
        started = time.monotonic()
        state = BatchState(state_path(self.cfg.out), self.run_id)
        try:
            status, message = self._run(state)
            totals = state.totals()
            n = state.prompt_count()
            written = self._write_outcomes(state)
        finally:
            state.close()
        if status == "complete" and totals["errors"]:
            status = "failed"
            message = (
                f"{totals['errors']} records failed (first: {message or ''}); "
                "the outcomes file has the rest"
            )
        return RunSummary(
            mode="batch",
            status=status,
            prompts=n,
            labeled=written,
            already_done=0,
            failed=totals["errors"],
            calls=totals["results"],
            model_cost_usd=totals["model_usd"],
            grader_cost_usd=totals["grader_usd"],
            seconds=time.monotonic() - started,
            out=str(self.cfg.out),
            message=message or f"labeled {written} prompts with {totals['results']} batch records",
        )

    def _run(self, state: BatchState) -> tuple[str, str]:
        if state.meta("ingested") is None:
            self._ingest(state)
        rounds = (
            [list(self.ladder.tiers)]
            if self.cfg.strategy == "all"
            else [[t] for t in self.ladder.tiers]
        )
        for i, tiers in enumerate(rounds):
            before = [t.outcomes_key for r in rounds[:i] for t in r]
            jobs: list[tuple[Tier, JobRow]] = []
            for tier in tiers:
                job = self._ensure_job(state, tier, before)
                if job is None and self._capped:
                    break  # the jobs already created still run, are waited for and collected
                if job is not None:
                    jobs.append((tier, job))
            pending = self._wait(state, [j for _, j in jobs])
            if pending:
                return "pending", (
                    f"jobs still running ({', '.join(pending)}); re-run the same command to "
                    "resume polling (the jobs keep running without it)"
                )
            failed = self._finish_collected(state, jobs)
            if failed:
                return "failed", failed
            if self._capped:
                return "spend_cap", self._cap_message(state)
        return "complete", state.first_error() or ""

    def _cap_message(self, state: BatchState) -> str:
        return (
            f"spend cap ${self.cfg.spend_cap_usd:g} would be exceeded by the next job "
            f"(worst-case estimate; committed ${state.committed_usd():.4f}); wrote what is done, "
            "re-run with a higher --spend-cap to continue"
        )

    def _finish_collected(self, state: BatchState, jobs: list[tuple[Tier, JobRow]]) -> str:
        failed = ""
        for tier, _ in jobs:
            row = state.job(tier.outcomes_key)
            assert row is not None
            if row.status in USABLE:
                self._collect(state, tier, row)
            elif not failed:
                failed = f"job {row.name} ended {row.status}"
        return failed

    # ------------------------------------------------------------------ steps
    def _ingest(self, state: BatchState) -> None:
        def checked() -> Iterator[PromptItem]:
            for item in iter_prompts(self.cfg.prompts):
                self.graders.check(item)
                yield item

        n = state.add_prompts(checked())
        state.set_meta("ingested", str(n))
        self.log.note(f"label[batch]: {n} prompts ingested (run {self.run_id})")

    def _find_job(self, name: str) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"nameContains": name, "maxResults": 100}
        while True:
            page = self.c.bedrock.list_model_invocation_jobs(**kwargs)
            for j in page.get("invocationJobSummaries", []):
                if j.get("jobName") == name:
                    return dict(j)
            if not page.get("nextToken"):
                return None
            kwargs["nextToken"] = page["nextToken"]

    def _ensure_job(self, state: BatchState, tier: Tier, before: list[str]) -> JobRow | None:
        row = state.job(tier.outcomes_key)
        if row is not None:
            return row
        name = job_name(self.bcfg, self.run_id, tier)
        found = self._find_job(name)
        if found is not None:  # created by a run that died before recording it
            row = JobRow(tier.outcomes_key, name, found["jobArn"], -1, 0.0, found["status"], False)
            state.save_job(row)
            self.log.note(f"label[batch]: {tier.name}: resuming job {name} ({found['status']})")
            return row
        in_prefix = f"{self.base}/input/{tier.name}/"
        records, estimate = self._upload_inputs(state, tier, before, in_prefix)
        if records == 0:
            return None
        cap = self.cfg.spend_cap_usd
        if cap is not None and state.committed_usd() + estimate > cap:
            self._capped = True
            return None
        resp = self.c.bedrock.create_model_invocation_job(
            jobName=name,
            roleArn=self.bcfg.role_arn,
            clientRequestToken=name,
            modelId=tier.model_id,
            inputDataConfig={
                "s3InputDataConfig": {
                    "s3Uri": f"s3://{self.bcfg.bucket}/{in_prefix}",
                    "s3InputFormat": "JSONL",
                }
            },
            outputDataConfig={
                "s3OutputDataConfig": {
                    "s3Uri": f"s3://{self.bcfg.bucket}/{self.base}/output/{tier.name}/"
                }
            },
        )
        row = JobRow(tier.outcomes_key, name, resp["jobArn"], records, estimate, "Submitted", False)
        state.save_job(row)
        if records < 100:
            self.log.note(
                f"label[batch]: {tier.name}: {records} records; real Bedrock requires at least "
                "100 per job"
            )
        self.log.note(
            f"label[batch]: {tier.name}: created job {name} ({records} records, "
            f"worst case ${estimate:.4f})"
        )
        return row

    def _upload_inputs(
        self, state: BatchState, tier: Tier, before: list[str], prefix: str
    ) -> tuple[int, float]:
        """Stream this tier's records into files of `records_per_file` and upload each."""
        records, estimate, part = 0, 0.0, 0
        fh: Any = None

        def flush() -> None:
            # upload_file reads the file part by part from disk; upload_fileobj would
            # buffer every part in memory, which grows with the number of prompts
            nonlocal fh, part
            if fh is None:
                return
            fh.close()
            name, fh = fh.name, None  # this function owns the file now; removed once
            key = f"{prefix}part-{part:05d}.jsonl"
            try:
                self.c.s3.upload_file(name, self.bcfg.bucket, key, Config=TRANSFER)
            except (S3UploadFailedError, ClientError, BotoCoreError) as e:
                raise self._s3_failure(e, f"upload of s3://{self.bcfg.bucket}/{key}") from e
            finally:
                os.unlink(name)
            part += 1

        try:
            for rid, chars, item in state.pending_for(before, self.cfg.strategy):
                if fh is None:
                    fh = tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False)  # noqa: SIM115
                line = {"recordId": record_id(rid), "modelInput": anthropic_body(item, tier)}
                fh.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
                records += 1
                estimate += worst_case_cost(chars, tier) * BATCH_PRICE_FACTOR
                if records % self.bcfg.records_per_file == 0:
                    flush()
            flush()
        finally:
            if fh is not None:
                fh.close()
                os.unlink(fh.name)
        return records, estimate

    def _wait(self, state: BatchState, jobs: list[JobRow]) -> list[str]:
        """Poll until every job ends; returns the names still running at max_wait_s."""
        deadline = None if self.bcfg.max_wait_s is None else time.monotonic() + self.bcfg.max_wait_s
        last_line = ""
        while True:
            running, parts = [], []
            for job in jobs:
                d = self.c.bedrock.get_model_invocation_job(jobIdentifier=job.arn)
                status = d["status"]
                records = job.records if job.records >= 0 else int(d.get("totalRecordCount", 0))
                collected = (state.job(job.tier) or job).collected
                state.save_job(
                    JobRow(
                        job.tier, job.name, job.arn, records, job.estimate_usd, status, collected
                    )
                )
                parts.append(
                    f"{job.name.rsplit('-', 1)[-1]}: {status} "
                    f"{d.get('processedRecordCount', 0)}/{d.get('totalRecordCount', '?')}"
                )
                if status not in TERMINAL:
                    running.append(job.name)
            line = "label[batch]: " + "; ".join(parts)
            if line != last_line:
                self.log.note(line)
                last_line = line
            if not running:
                return []
            if deadline is not None and time.monotonic() >= deadline:
                return running
            time.sleep(self.bcfg.poll_interval_s)

    def _output_keys(self, tier: Tier, job: JobRow) -> list[str]:
        prefix = f"{self.base}/output/{tier.name}/{job.job_id}/"
        keys: list[str] = []
        try:
            for page in self.c.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bcfg.bucket, Prefix=prefix
            ):
                keys += [
                    o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl.out")
                ]
        except (ClientError, BotoCoreError) as e:
            raise self._s3_failure(e, f"listing s3://{self.bcfg.bucket}/{prefix}") from e
        return sorted(keys)

    def _s3_failure(self, e: Exception, action: str) -> BatchError:
        return s3_failure(e, action, self.bcfg.bucket, self.c.s3.meta.endpoint_url)

    def _lines(self, key: str) -> Iterator[dict[str, Any]]:
        try:
            body = self.c.s3.get_object(Bucket=self.bcfg.bucket, Key=key)["Body"]
        except (ClientError, BotoCoreError) as e:
            raise self._s3_failure(e, f"download of s3://{self.bcfg.bucket}/{key}") from e
        for n, raw in enumerate(body.iter_lines(), 1):
            if raw.strip():
                try:
                    yield json.loads(raw)
                except ValueError:
                    raise BatchError(f"s3://{self.bcfg.bucket}/{key}:{n}: invalid JSON") from None

    def _collect(self, state: BatchState, tier: Tier, job: JobRow) -> None:
        """Grade this job's output records into the state (idempotent upserts)."""
        if job.collected:
            return
        job = state.job(tier.outcomes_key) or job
        total = max(job.records, 0)
        progress = Progress(total, f"label[batch] grade {tier.name}", self.err, self.cfg.progress)
        pool = ThreadPoolExecutor(self.bcfg.grade_concurrency) if self.graders.uses_judge else None
        window: deque[tuple[int, ModelAnswer, Future[Verdict] | Verdict]] = deque()
        spent = 0.0

        def settle(keep: int) -> None:
            nonlocal spent
            while len(window) > keep:
                rid, answer, v = window.popleft()
                try:
                    verdict = v.result() if isinstance(v, Future) else v
                except (GradeError, ClientError, BotoCoreError) as e:
                    state.put_error(rid, tier.outcomes_key, f"grading: {type(e).__name__}: {e}")
                else:
                    result = tier_result(tier, answer, verdict, "batch")
                    state.put_result(rid, tier.outcomes_key, result)
                    spent += (result.cost_usd or 0.0) + verdict.cost_usd
                progress.update(1, spent)

        state.begin()
        try:
            n = 0
            for key in self._output_keys(tier, job):
                for rec in self._lines(key):
                    rid = rid_of(str(rec.get("recordId", "")))
                    item = state.item(rid) if rid is not None else None
                    if rid is None or item is None:
                        continue  # not one of ours
                    if "modelOutput" not in rec:
                        e = rec.get("error") or {}
                        state.put_error(
                            rid, tier.outcomes_key, f"{e.get('errorCode')}: {e.get('errorMessage')}"
                        )
                        progress.update(1)
                        continue
                    answer = ModelAnswer.from_anthropic(rec["modelOutput"])
                    grader = self.graders.for_item(item)
                    verdict: Future[Verdict] | Verdict
                    if pool is not None:
                        verdict = pool.submit(grader.grade, item, answer)
                    else:
                        try:
                            verdict = grader.grade(item, answer)
                        except GradeError as e:
                            state.put_error(rid, tier.outcomes_key, f"grading: {e}")
                            continue
                    window.append((rid, answer, verdict))
                    settle(self.bcfg.grade_concurrency * 4)
                    n += 1
                    if n % 2000 == 0:
                        state.commit()
                        state.begin()
            settle(0)
            state.save_job(
                JobRow(job.tier, job.name, job.arn, job.records, job.estimate_usd, job.status, True)
            )
            state.commit()
        except BaseException:
            state.commit()  # what was graded stays; the job is re-collected next time
            raise
        finally:
            if pool is not None:
                pool.shutdown()
            progress.close()

    def _write_outcomes(self, state: BatchState) -> int:
        out = self.cfg.out
        tmp = out.with_name(out.name + ".tmp")
        n = 0
        with tmp.open("w", encoding="utf-8") as f:
            order = {t.outcomes_key: i for i, t in enumerate(self.ladder.tiers)}
            for item, results in state.labeled_rows():
                ranked = dict(sorted(results.items(), key=lambda kv: order.get(kv[0], len(order))))
                rec: OutcomeRecord = outcome_record(item, ranked)
                f.write(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        return n


def run_batch(
    cfg: LabelConfig,
    bcfg: BatchConfig,
    ladder: Ladder,
    graders: GraderSet,
    clients: BatchClients,
    stderr: TextIO | None = None,
) -> RunSummary:
    return BatchRunner(cfg, bcfg, ladder, graders, clients, stderr).run()
