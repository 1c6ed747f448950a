"""Helpers and fixtures for the labeling tests (no tests here; conftest.py re-exports the
fixtures, and test modules import helpers from here, since `conftest` is ambiguous
across test directories): real prompts from ../shared/data, the local Bedrock
server (with the batch control plane) and moto S3 on loopback, real boto3 clients.

References: the shared data records whether each model passed but not the gold
answers, so end-to-end tests give each prompt a placeholder reference (a letter among
its options, or a number) and start the server from the same records: it answers
with the reference where the recorded model passed and a wrong one where it failed.
Grading must then reproduce the recorded verdicts. Under CI=true missing data fails.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from loopback import free_port
from moto.server import ThreadedMotoServer
from realdata import LADDERS, REPO, require_shared

# `tests/labeling` (no __init__) would otherwise shadow the `labeling` package as a
# namespace package until the editable install maps it; a regular package on sys.path wins.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fake_bedrock import LocalBedrock, OutcomeIndex
from fake_bedrock.batch import loopback_s3_client
from labeling.batch import BatchClients, run_batch
from labeling.clients import control_client, runtime_client, s3_client
from labeling.config import AwsConfig, BatchConfig, LabelConfig
from labeling.graders import ChoiceGrader, GraderSet
from labeling.ondemand import run_ondemand
from labeling.results import RunSummary
from outcomes import parse_record
from router.ladder import Ladder

ROLE = "arn:aws:iam::123456789012:role/bedrock-batch"
MMLU_LADDER = LADDERS / "mmlu_pro.toml"
Records = list[dict[str, Any]]


def read_some(
    name: str, n: int, keep: Callable[[dict[str, Any]], bool] = lambda r: True, step: int = 1
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with gzip.open(require_shared(name), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % step:
                continue
            rec = json.loads(line)
            if keep(rec):
                out.append(rec)
                if len(out) == n:
                    break
    return out


def option_letters(prompt: str) -> list[str]:
    return [
        ln[0]
        for ln in prompt.splitlines()
        if len(ln) > 2 and ln[1] == "." and ln[0] in "ABCDEFGHIJ"
    ]


def placeholder_letter(rec: dict[str, Any]) -> str:
    letters = option_letters(rec["prompt"]) or ["A"]
    return letters[int(hashlib.sha256(rec["id"].encode()).hexdigest(), 16) % len(letters)]


def write_prompts(path: Path, recs: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for r in recs:
            row = {k: r[k] for k in ("id", "prompt", "reference", "task", "split") if k in r}
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="session")
def ladder() -> Ladder:
    return Ladder.load(MMLU_LADDER)


@pytest.fixture(scope="session")
def ladder_path() -> Path:
    return MMLU_LADDER


@pytest.fixture(scope="session")
def mmlu() -> list[dict[str, Any]]:
    """240 real mmlu_pro prompts with recorded outcomes and placeholder gold letters."""
    recs = read_some("mmlu_pro.jsonl.gz", 240, step=37)
    for r in recs:
        r["reference"] = placeholder_letter(r)
    return recs


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_url: str) -> str:
    name = f"labels-{uuid.uuid4().hex[:12]}"  # moto's state is process-wide
    loopback_s3_client(s3_url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def start_server(ladder: Ladder, s3_url: str) -> Iterator[Callable[..., LocalBedrock]]:
    started: list[LocalBedrock] = []

    def start(recs: list[dict[str, Any]], **kw: Any) -> LocalBedrock:
        index = OutcomeIndex([parse_record(r, "test") for r in recs], ladder)
        srv = LocalBedrock(ladder, index, s3_endpoint_url=s3_url, **kw).start()
        started.append(srv)
        return srv

    yield start
    for s in started:
        s.stop()


def aws_for(srv: LocalBedrock, s3_url: str, max_attempts: int = 4) -> AwsConfig:
    return AwsConfig(
        endpoint_url=srv.url,
        s3_endpoint_url=s3_url,
        dummy_credentials=True,
        retry_delay_scale=0.01,
        max_attempts=max_attempts,
        read_timeout_s=10.0,
    )


def recorded_verdicts(recs: list[dict[str, Any]], ladder: Ladder) -> dict[tuple[str, str], float]:
    """(prompt id, outcomes key) -> recorded score, where the recorded answer fits the tier's
    max_tokens (a longer one is cut off, which no grader should pass)."""
    out = {}
    for r in recs:
        for t in ladder.tiers:
            res = r["results"].get(t.outcomes_key)
            if res is None:
                continue
            chars = res.get("output_chars")
            tokens = res.get("output_tokens") or (chars / 4 if chars else 200)
            if tokens <= t.max_tokens:
                out[(r["id"], t.outcomes_key)] = res["score"]
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def judge_responder(model_id: str, body: Any) -> Any:
    """A scripted judge for the local server: answers only rubric prompts, comparing the
    answer's final line with the reference; every other request gets the recorded reply."""
    from fake_bedrock import Reply
    from labeling.answers import final_answer

    text = body["messages"][0]["content"][0]["text"]
    if "<answer>" not in text:
        return None
    ref = text.split("<reference>\n")[1].split("\n</reference>")[0].strip()
    answer = text.split("<answer>\n")[1].split("\n</answer>")[0]
    ok = final_answer(answer).strip("() .") == ref
    verdict = "matches" if ok else "differs from"
    return Reply(f"REASON: {verdict} the reference.\nSCORE: {9 if ok else 1}")


def run_cli(argv: list[str]) -> int:
    """`tier-router label ...` through the real parser and command, in-process."""
    import argparse

    from tier_router.labeling_cli import register

    parser = argparse.ArgumentParser(prog="tier-router")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@dataclass(frozen=True)
class Lab:
    """One end-to-end test's setup (temp dir, real prompts, ladder, server starter, moto
    S3) and the runs the tests make with it, all graded by the letter grader."""

    tmp: Path
    mmlu: Records
    ladder: Ladder
    ladder_path: Path
    start_server: Callable[..., LocalBedrock]
    s3_url: str

    def prompts(self, recs: Records) -> Path:
        return write_prompts(self.tmp / "p.jsonl", recs)

    def runtime(self, srv: LocalBedrock, max_attempts: int = 4) -> Any:
        return runtime_client(aws_for(srv, self.s3_url, max_attempts))

    def clients(self, srv: LocalBedrock) -> BatchClients:
        aws = aws_for(srv, self.s3_url)
        return BatchClients(control_client(aws), s3_client(aws), runtime_client(aws))

    def ondemand(self, cfg: LabelConfig, runtime: Any) -> RunSummary:
        return run_ondemand(cfg, self.ladder, GraderSet(ChoiceGrader()), runtime)

    def batch(self, cfg: LabelConfig, srv: LocalBedrock, bucket: str, **bcfg: Any) -> RunSummary:
        """A batch run polling every 50 ms; `bcfg` sets the rest of its BatchConfig."""
        batch_cfg = BatchConfig(bucket, ROLE, poll_interval_s=0.05, **bcfg)
        return run_batch(cfg, batch_cfg, self.ladder, GraderSet(ChoiceGrader()), self.clients(srv))

    def label_argv(self, prompts: Path, out: Path, srv: LocalBedrock, *flags: str) -> list[str]:
        """`tier-router label` argv against `srv` with fake keys; `flags` complete it."""
        files = ["--prompts", str(prompts), "--ladder", str(self.ladder_path), "--out", str(out)]
        return ["label", *files, "--endpoint-url", srv.url, "--dummy-credentials", *flags]


@pytest.fixture
def lab(
    tmp_path: Path,
    mmlu: Records,
    ladder: Ladder,
    ladder_path: Path,
    start_server: Callable[..., LocalBedrock],
    s3_url: str,
) -> Lab:
    return Lab(tmp_path, mmlu, ladder, ladder_path, start_server, s3_url)
