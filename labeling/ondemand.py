"""On-demand labeling: concurrent Converse calls, bounded in flight, resumable, capped.

Prompts stream from the file; at most `concurrency` are in flight. Each finished prompt
is appended to the output at once (the output is the checkpoint, see store.py). When
the spend so far reaches the cap no new prompt starts, the ones in flight finish and
are written, and the run reports `spend_cap`. A prompt whose call still fails after
botocore's retries is not written, so the next run retries it.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from labeling.answers import ModelAnswer
from labeling.config import LabelConfig
from labeling.graders import GradeError, GraderSet
from labeling.invocation import converse_request
from labeling.prompts import PromptItem, PromptsError, iter_prompts
from labeling.results import RunSummary, Spend, call_cost, outcome_record, tier_result
from labeling.store import OutcomeAppender
from outcomes import ModelResult, OutcomeRecord
from router.ladder import Ladder
from serving.progress import Progress


def validate_prompts(cfg: LabelConfig, graders: GraderSet) -> set[str]:
    """One streaming pass before any call: every line parses, ids are unique, every
    prompt has what its grader needs. Returns the ids."""
    ids: set[str] = set()
    for item in iter_prompts(cfg.prompts):
        if item.id in ids:
            raise PromptsError(f"{item.where}: field 'id': duplicate id {item.id!r}")
        ids.add(item.id)
        graders.check(item)
    return ids


@dataclass(frozen=True)
class _Failure:
    item: PromptItem
    error: str


def label_prompt(
    item: PromptItem, ladder: Ladder, strategy: str, graders: GraderSet, client: Any, spend: Spend
) -> OutcomeRecord:
    """Run the tiers on one prompt (all, or cheapest-first until one passes) and grade."""
    grader = graders.for_item(item)
    results: dict[str, ModelResult] = {}
    for tier in ladder.tiers:
        answer = ModelAnswer.from_converse(client.converse(**converse_request(item, tier)))
        spend.add(model_usd=call_cost(tier, answer, "ondemand"), calls=1)
        verdict = grader.grade(item, answer)
        spend.add(grader_usd=verdict.cost_usd)
        results[tier.outcomes_key] = tier_result(tier, answer, verdict, "ondemand")
        if strategy == "cascade" and verdict.passed:
            break
    return outcome_record(item, results)


def _task(
    item: PromptItem, ladder: Ladder, strategy: str, graders: GraderSet, client: Any, spend: Spend
) -> OutcomeRecord | _Failure:
    try:
        return label_prompt(item, ladder, strategy, graders, client, spend)
    except ClientError as e:
        err = e.response.get("Error", {})
        return _Failure(item, f"{err.get('Code', 'ClientError')}: {err.get('Message', e)}")
    except (BotoCoreError, GradeError) as e:
        return _Failure(item, f"{type(e).__name__}: {e}")


def run_ondemand(
    cfg: LabelConfig,
    ladder: Ladder,
    graders: GraderSet,
    client: Any,
    stderr: TextIO | None = None,
) -> RunSummary:
    err = stderr if stderr is not None else sys.stderr
    started = time.monotonic()
    ids = validate_prompts(cfg, graders)
    appender = OutcomeAppender(cfg.out)
    done = appender.load_done() & ids
    progress = Progress(len(ids) - len(done), "label[ondemand]", err, cfg.progress)
    spend = Spend()
    labeled = 0
    failures: list[_Failure] = []
    status = "complete"
    inflight: set[Future[OutcomeRecord | _Failure]] = set()

    def drain(block_until: int) -> None:
        nonlocal labeled
        while len(inflight) > block_until:
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in finished:
                inflight.discard(fut)
                res = fut.result()
                if isinstance(res, _Failure):
                    failures.append(res)
                    if len(failures) <= 5:
                        progress.note(f"label: {res.item.id}: {res.error}")
                else:
                    appender.append(res)
                    labeled += 1
                progress.update(1, spend.total)

    try:
        with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="label") as pool:
            try:
                for item in iter_prompts(cfg.prompts):
                    if item.id in done:
                        continue
                    if cfg.spend_cap_usd is not None and spend.total >= cfg.spend_cap_usd:
                        status = "spend_cap"
                        break
                    drain(cfg.concurrency - 1)
                    inflight.add(
                        pool.submit(_task, item, ladder, cfg.strategy, graders, client, spend)
                    )
            except KeyboardInterrupt:
                status = "interrupted"
            drain(0)  # in-flight prompts finish and are written, whatever stopped the run
    finally:
        appender.close()
        progress.close()
    if status == "complete" and failures:
        status = "failed"
    if status == "spend_cap":
        message = (
            f"spend cap ${cfg.spend_cap_usd:g} reached (spent ${spend.total:.4f}); "
            f"{labeled} prompts written, re-run with a higher --spend-cap to continue"
        )
    elif status == "failed":
        first = failures[0]
        message = (
            f"{len(failures)} prompts failed after retries (first: {first.item.id}: "
            f"{first.error}); re-run to retry them"
        )
    elif status == "interrupted":
        message = f"interrupted; {labeled} prompts written, re-run to continue"
    else:
        message = f"labeled {labeled} prompts"
    return RunSummary(
        mode="ondemand",
        status=status,
        prompts=len(ids),
        labeled=labeled,
        already_done=len(done),
        failed=len(failures),
        calls=spend.calls,
        model_cost_usd=spend.model_usd,
        grader_cost_usd=spend.grader_usd,
        seconds=time.monotonic() - started,
        out=str(cfg.out),
        message=message,
    )
