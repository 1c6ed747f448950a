"""Routed batch serving: route every record, one Bedrock Batch job per model per round,
judge the answers with the bundle's cascade, escalate the rejected ones in the next round.

Each round: replay every unfinished record's cascade walk over the answers so far
(serving.batch_walk); group the answers it still needs by model (a tier, or the second
opinion where the policy consults it); write each group to S3 as Batch input files of
at most `records_per_job` records, one job each, at most `max_jobs_in_flight` at a time;
poll; read the outputs back. A record a job failed or skipped is tried again next round,
up to `max_record_retries` times, then that model counts as unavailable for it (the walk
moves up, as on-demand failover does); a record no model answered is reported, never
dropped. The state (serving.batch_run_state) is saved after every step, so a killed run
resumes where it was, re-attaching to its jobs by their idempotent client request tokens.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from router.cascade import Walk
from router.ladder import Ladder, Tier
from serving.batch_input import BatchItem
from serving.batch_jobs import (
    MAX_RECORDS_PER_JOB,
    TERMINAL_STATUSES,
    USABLE_STATUSES,
    answer_of,
    check_batch_location,
    job_name,
    model_input,
    output_keys,
    output_records,
    record_id,
    rid_of,
    upload_jsonl,
)
from serving.batch_run_state import Call, JobState, RecordState, RunState, StateStore
from serving.batch_walk import Judge, settle
from serving.outcome_log import (
    NO_FEATURES_ROUTE_ERROR,
    NO_FEATURES_ROUTER,
    OutcomeLogger,
    PromptStorage,
    check_hash_key,
    prompt_key,
)
from serving.progress import Progress

log = logging.getLogger(__name__)

_JOB_PREFIX = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]{0,19}")


class BatchRunError(RuntimeError):
    """A batch run cannot go on (a job API or S3 call failed past its retries)."""


@dataclass(frozen=True)
class BatchRunConfig:
    """Where the files go, the job quotas, and how failures are retried."""

    bucket: str
    role_arn: str
    s3_prefix: str = "tier-router-batch"
    job_prefix: str = "route"
    records_per_job: int = 10_000
    max_jobs_in_flight: int = 10
    poll_interval_s: float = 30.0
    max_record_retries: int = 3
    max_rounds: int = 20
    prompt_storage: PromptStorage = PromptStorage.FEATURES  # as TieredClientConfig's
    prompt_hash_key: bytes = field(default=b"", repr=False)  # empty: $TIER_ROUTER_PROMPT_KEY
    progress: bool = True
    tags: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_batch_location(self.bucket, self.role_arn, self.s3_prefix)
        if not isinstance(self.prompt_storage, PromptStorage):
            raise ValueError(f"prompt_storage must be a PromptStorage, got {self.prompt_storage!r}")
        object.__setattr__(self, "prompt_hash_key", prompt_key(self.prompt_hash_key))
        if self.prompt_storage is PromptStorage.HASH:
            check_hash_key(self.prompt_hash_key)
        if not _JOB_PREFIX.fullmatch(self.job_prefix):
            raise ValueError(f"job prefix must be 1-20 letters, digits or '-': {self.job_prefix!r}")
        if not 1 <= self.records_per_job <= MAX_RECORDS_PER_JOB:
            raise ValueError(f"records per job must be in [1, {MAX_RECORDS_PER_JOB}]")
        if not 1 <= self.max_jobs_in_flight <= 1000:
            raise ValueError("jobs in flight must be in [1, 1000]")
        if not 0 < self.poll_interval_s <= 3600:
            raise ValueError(f"poll interval must be in (0, 3600] s, got {self.poll_interval_s}")
        if not 0 <= self.max_record_retries <= 20:
            raise ValueError("record retries must be in [0, 20]")
        if not 1 <= self.max_rounds <= 100:
            raise ValueError("max rounds must be in [1, 100]")


@dataclass(frozen=True)
class BatchClients:
    bedrock: Any  # the `bedrock` control plane (model invocation jobs)
    s3: Any


@dataclass
class BatchSummary:
    records: int = 0
    answered: int = 0
    failed: int = 0
    ok: int = 0
    rounds: int = 0
    jobs: int = 0
    calls: int = 0
    escalations: int = 0
    second_opinion_calls: int = 0
    record_failures: int = 0  # batch records that failed or were skipped (then retried)
    jobs_failed: int = 0
    cost_usd: float = 0.0
    on_demand_cost_usd: float = 0.0
    # Every record on the top tier at its batch price: the top's own answer where it was
    # called, else this run's mean top-tier output length (an estimate).
    always_top_cost_usd_est: float = 0.0
    final_tiers: dict[str, int] = field(default_factory=dict)
    log_records: int = 0
    out: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["cost_usd"] = round(self.cost_usd, 6)
        d["on_demand_cost_usd"] = round(self.on_demand_cost_usd, 6)
        d["always_top_cost_usd_est"] = round(self.always_top_cost_usd_est, 6)
        d["cost_vs_on_demand"] = (
            round(self.cost_usd / self.on_demand_cost_usd, 4) if self.on_demand_cost_usd else None
        )
        d["seconds"] = round(self.seconds, 1)
        return d


def run_id_of(items_path: Path, router_version: str, ladder: Ladder, point: str) -> str:
    """Names the run's files and jobs: the same input, bundle and ladder give the same id."""
    h = hashlib.sha256()
    with items_path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(router_version.encode())
    h.update(ladder.to_toml().encode())
    h.update(point.encode())
    return h.hexdigest()[:12]


def route_records(
    router: Any, judge: Judge, items: Sequence[BatchItem], chunk: int = 4096
) -> list[RecordState]:
    """Each record's start tier and router P(pass), with `route_batch` in chunks, as the
    on-demand client would start it (the cascade's start rule where there is one: it
    needs only P(pass), so the router's `p_pass_batch`, route_batch's own first step,
    skips building the decisions)."""
    names = judge.ladder.names
    out: list[RecordState] = []
    cascade = judge.cascade
    batch = getattr(router, "route_batch", None)  # a fixed or fail-safe router has none
    p_batch = getattr(router, "p_pass_batch", None) if cascade is not None else None
    if p_batch is not None and router.ladder.names != names:
        p_batch = None  # its columns are the router's ladder's tiers
    for s in range(0, len(items), chunk):
        texts = [it.text for it in items[s : s + chunk]]
        if p_batch is not None:
            assert cascade is not None
            for text, p in zip(texts, p_batch(texts).tolist(), strict=True):
                uses_costs = cascade.policy.start_lambda >= 0
                costs = cascade.file.cost.start_costs(len(text)) if uses_costs else []
                out.append(RecordState(cascade.policy.start_tier(p, costs), p))
            continue
        decisions = batch(texts) if batch is not None else [router.route(t) for t in texts]
        for text, d in zip(texts, decisions, strict=True):
            p = [float(d.p_pass[n]) for n in names if n in d.p_pass]
            if cascade is not None:
                # Predicted costs matter only to a start_lambda rule (as in start_tier).
                uses_costs = cascade.policy.start_lambda >= 0
                costs = cascade.file.cost.start_costs(len(text)) if uses_costs else []
                start = cascade.policy.start_tier(p, costs)
            else:
                start = int(d.tier_index)
            out.append(RecordState(start=start, p_router=p))
    return out


class BatchRunner:
    def __init__(
        self,
        cfg: BatchRunConfig,
        router: Any,
        judge: Judge,
        clients: BatchClients,
        store: StateStore,
        stderr: TextIO | None = None,
        after_step: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg, self.router, self.judge, self.c, self.store = cfg, router, judge, clients, store
        self.err = stderr if stderr is not None else sys.stderr
        self.after_step = after_step  # tests: a hook called after each saved step
        self.log = Progress(0, "batch", self.err, cfg.progress)

    # ---------------------------------------------------------------- driver
    def run(
        self, items_path: Path, items: Sequence[BatchItem], out: Path, logger: OutcomeLogger
    ) -> BatchSummary:
        """Route (or resume), run rounds until every walk has ended, write the answers and
        one outcome log record per input record."""
        started = time.monotonic()
        state = self.prepare(items_path, items)
        while True:
            pending = [j for j in state.round_jobs(state.round) if not j.collected]
            if state.round and pending:
                self._run_round(state, items, pending)
                continue
            if not self.plan_round(state, items):
                break
        summary = self._finish(state, items, out, logger)
        summary.seconds = time.monotonic() - started
        return summary

    def prepare(self, items_path: Path, items: Sequence[BatchItem]) -> RunState:
        """The saved state of this run, or a new one with every record routed."""
        point = self.judge.cascade.policy.label if self.judge.cascade else "checks"
        run_id = run_id_of(items_path, self.router.version, self.judge.ladder, point)
        state = self.store.load()
        if state is not None and state.run_id != run_id:
            raise BatchRunError(
                f"state {self.store.location} belongs to another run ({state.run_id}; this "
                f"one is {run_id}: the input, bundle or ladder changed); use another --state"
            )
        if state is None:  # saved with round 1's plan (routing again is the same)
            state = RunState(run_id, route_records(self.router, self.judge, items))
            self.log.note(f"batch: routed {len(items)} records (run {run_id})")
        return state

    def submit(self, state: RunState, items: Sequence[BatchItem], jobs: list[JobState]) -> None:
        """Write the input files of `jobs` and create those not created yet; the state is
        saved once for them all (a job created but not saved is found by its token)."""
        todo = [j for j in jobs if j.arn is None]
        for job in todo:
            self._submit(state, items, job)
        if todo:
            self._save(state, f"submitted {len(todo)} jobs of round {state.round}")

    def _save(self, state: RunState, step: str) -> None:
        self.store.save(state)
        if self.after_step is not None:
            self.after_step(step)

    # ---------------------------------------------------------------- rounds
    def plan_round(self, state: RunState, items: Sequence[BatchItem]) -> bool:
        """The next round's jobs from what the walks need; False when none need anything."""
        needs: dict[str, list[int]] = {}
        names = self.judge.ladder.names
        for rid, (item, rec) in enumerate(zip(items, state.records, strict=True)):
            # A walk's first call is always its start tier: no need to replay it.
            got = (
                names[rec.start]
                if not rec.calls and not rec.dead
                else self.judge.advance(item, rec)
            )
            if isinstance(got, str):
                needs.setdefault(got, []).append(rid)
        if not needs:
            return False
        if state.round >= self.cfg.max_rounds:
            for target, rids in needs.items():  # reported as unanswered, never dropped
                for rid in rids:
                    state.records[rid].dead.append(target)
                    state.records[rid].last_error[target] = "max rounds reached"
            return self.plan_round(state, items)
        state.round += 1
        order = {n: i for i, n in enumerate(self.judge.ladder.names)}
        for target in sorted(needs, key=lambda t: order.get(t, -1)):
            rids = needs[target]
            for part, s in enumerate(range(0, len(rids), self.cfg.records_per_job)):
                name = job_name(
                    self.cfg.job_prefix, state.run_id, f"r{state.round}", target, f"p{part}"
                )
                chunk = rids[s : s + self.cfg.records_per_job]
                state.jobs.append(JobState(state.round, target, part, name, chunk))
        self._save(state, f"planned round {state.round}")
        counts = ", ".join(f"{t}: {len(r)}" for t, r in needs.items())
        self.log.note(f"batch: round {state.round}: {counts}")
        return True

    def _run_round(self, state: RunState, items: Sequence[BatchItem], jobs: list[JobState]) -> None:
        """Submit, wait for and collect this round's jobs, `max_jobs_in_flight` at a time."""
        n = self.cfg.max_jobs_in_flight
        for s in range(0, len(jobs), n):
            wave = jobs[s : s + n]
            self.submit(state, items, wave)
            self._wait(state, wave)
            for job in wave:
                self._collect(state, job)
            self._save(state, f"collected {len(wave)} jobs of round {state.round}")

    def _base(self, state: RunState, job: JobState) -> str:
        return f"{self.cfg.s3_prefix}/{state.run_id}/r{job.round}/{job.target}/p{job.part:05d}"

    def _submit(self, state: RunState, items: Sequence[BatchItem], job: JobState) -> None:
        tier = self.judge.tier_of(job.target)
        base = self._base(state, job)
        in_key = f"{base}/input/records.jsonl"
        lines = (
            {
                "recordId": record_id(rid),
                "modelInput": model_input(
                    items[rid].request.messages, tier, items[rid].request.system,
                    items[rid].max_tokens,
                ),
            }
            for rid in job.rids
        )  # fmt: skip
        try:
            upload_jsonl(self.c.s3, self.cfg.bucket, in_key, lines)
            resp = self.c.bedrock.create_model_invocation_job(
                jobName=job.name,
                roleArn=self.cfg.role_arn,
                clientRequestToken=job.name,
                modelId=tier.model_id,
                inputDataConfig={
                    "s3InputDataConfig": {
                        "s3Uri": f"s3://{self.cfg.bucket}/{in_key}",
                        "s3InputFormat": "JSONL",
                    }
                },
                outputDataConfig={
                    "s3OutputDataConfig": {"s3Uri": f"s3://{self.cfg.bucket}/{base}/output/"}
                },
            )
        except Exception as e:
            raise BatchRunError(f"job {job.name}: submit failed: {type(e).__name__}: {e}") from e
        job.arn, job.status = resp["jobArn"], "Submitted"
        self.log.note(f"batch: created job {job.name} ({tier.model_id}, {len(job.rids)} records)")

    def _wait(self, state: RunState, jobs: list[JobState]) -> None:
        """Poll until every job of the wave ends; a progress bar of processed records."""
        total = sum(len(j.rids) for j in jobs)
        bar = Progress(total, f"batch round {state.round}", self.err, self.cfg.progress)
        try:
            while True:
                running, done = 0, 0
                for job in jobs:
                    if job.status not in TERMINAL_STATUSES:
                        try:
                            d = self.c.bedrock.get_model_invocation_job(jobIdentifier=job.arn)
                        except Exception as e:
                            raise BatchRunError(
                                f"job {job.name}: status failed: {type(e).__name__}: {e}"
                            ) from e
                        job.status = d["status"]  # saved with the collected job
                        processed = int(d.get("processedRecordCount", 0) or 0)
                    else:
                        processed = len(job.rids)
                    done += min(processed, len(job.rids))
                    running += job.status not in TERMINAL_STATUSES
                bar.update(done - bar.done)
                if not running:
                    return
                time.sleep(self.cfg.poll_interval_s)
        finally:
            bar.close()

    def _collect(self, state: RunState, job: JobState) -> None:
        """This job's answers into the records; a record it did not answer is a failure."""
        if job.collected:
            return
        answered: set[int] = set()
        errors: dict[int, str] = {}
        if job.status in USABLE_STATUSES:
            prefix = f"{self._base(state, job)}/output/{job.job_id}/"
            try:
                for key in output_keys(self.c.s3, self.cfg.bucket, prefix):
                    for rec in output_records(self.c.s3, self.cfg.bucket, key):
                        rid = rid_of(str(rec.get("recordId", "")))
                        if rid is None or rid >= len(state.records):
                            continue
                        call = _call_of(rec, job.round)
                        if call is None:
                            e = rec.get("error") or {}
                            errors[rid] = f"{e.get('errorCode')}: {e.get('errorMessage')}"
                            continue
                        state.records[rid].calls[job.target] = call
                        answered.add(rid)
            except Exception as e:
                raise BatchRunError(f"job {job.name}: reading output failed: {e}") from e
        for rid in job.rids:
            if rid in answered:
                continue
            r = state.records[rid]
            r.fails[job.target] = r.fails.get(job.target, 0) + 1
            r.last_error[job.target] = errors.get(rid) or f"job {job.name} ended {job.status}"
            if r.fails[job.target] > self.cfg.max_record_retries:
                r.dead.append(job.target)
        job.collected = True
        failed = len(job.rids) - len(answered)
        self.log.note(
            f"batch: {job.name} {job.status}: {len(answered)} answered, {failed} to retry"
        )

    # ---------------------------------------------------------------- output
    def _finish(
        self, state: RunState, items: Sequence[BatchItem], out: Path, logger: OutcomeLogger
    ) -> BatchSummary:
        s = BatchSummary(
            records=len(items),
            rounds=state.round,
            jobs=len(state.jobs),
            jobs_failed=sum(j.status not in USABLE_STATUSES for j in state.jobs),
            record_failures=sum(sum(r.fails.values()) for r in state.records),
            out=str(out),
        )
        second = self.judge.ladder.second_opinion
        top = self.judge.ladder.tiers[-1]
        top_out = [c.output_tokens for r in state.records if (c := r.calls.get(top.name))]
        mean_top_out = sum(top_out) / len(top_out) if top_out else float(top.max_tokens)
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        names = self.judge.ladder.names
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for item, rec in zip(items, state.records, strict=True):
                walked = self.judge.advance(item, rec)
                assert isinstance(walked, Walk), "a finished run has no pending walks"
                feats, no_feats = self._features(item.text)
                done = settle(
                    self.judge, item, rec, walked, self.router.version, names,
                    self.cfg.prompt_storage, now, self.cfg.tags, self.cfg.prompt_hash_key,
                    feats, no_feats,
                )  # fmt: skip
                f.write(json.dumps(done.line, ensure_ascii=False) + "\n")
                logger.write(done.log)  # a sink that is down keeps it in its backlog
                s.log_records += 1
                s.answered += done.answered
                s.failed += not done.answered
                s.ok += bool(done.line["ok"])
                s.calls += len(rec.calls)
                s.second_opinion_calls += second is not None and second.name in rec.calls
                s.escalations += done.log["escalations"]
                s.cost_usd += done.cost_usd
                s.always_top_cost_usd_est += _always_top(rec, top, mean_top_out)
                s.on_demand_cost_usd += done.on_demand_cost_usd
                if done.final_tier is not None:
                    s.final_tiers[done.final_tier] = s.final_tiers.get(done.final_tier, 0) + 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        state.finished = True
        self._save(state, "finished")
        return s


    def _features(self, text: str) -> tuple[Any | None, str | None]:
        """Under prompt_storage=features: the router's features of the prompt, or why not."""
        if self.cfg.prompt_storage is not PromptStorage.FEATURES:
            return None, None
        of = getattr(self.router, "prompt_features", None)  # a fixed router has none
        if of is None:
            return None, NO_FEATURES_ROUTER
        try:
            feats = of(text)
        except Exception:  # the log keeps the record, with the reason
            log.exception("router features failed")
            return None, NO_FEATURES_ROUTE_ERROR
        note = getattr(self.router, "features_note", None) or NO_FEATURES_ROUTER
        return feats, None if feats is not None else note


def _always_top(rec: RecordState, top: Tier, mean_out: float) -> float:
    call = rec.calls.get(top.name)
    if call is not None:
        return top.batch_cost_usd(call.input_tokens, call.output_tokens)
    tokens_in = max((c.input_tokens for c in rec.calls.values()), default=0)
    return top.batch_cost_usd(tokens_in, mean_out)


def _call_of(rec: dict[str, Any], round_: int) -> Call | None:
    """An output record's answer, or None when the record failed."""
    got = answer_of(rec.get("modelOutput"))
    if got is None:
        return None
    text, stop, tokens_in, tokens_out = got
    return Call(text, stop, tokens_in, tokens_out, round_)
