"""Batch mode end to end: boto3 `bedrock` control plane against the local server, S3 on
moto, answers from real mmlu_pro records; restart, spend cap and the job API itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from loopback import free_port
from test_labeling_ondemand import check_against_recorded
from test_labeling_support import ROLE, Lab, Records, read_jsonl, run_cli

from labeling.batch import state_path
from labeling.config import LabelConfig


def s3_lines(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(x) for x in body.splitlines() if x.strip()]


def assert_same_scores(rows: Records, ondemand_out: Path) -> None:
    """Each batch row has the tiers and scores the on-demand run gave the same prompt."""
    by_id = {r["id"]: r for r in read_jsonl(ondemand_out)}
    for r in rows:
        assert {k: v["score"] for k, v in r["results"].items()} == {
            k: v["score"] for k, v in by_id[r["id"]]["results"].items()
        }


def test_batch_all_tiers_end_to_end(lab: Lab, bucket: str) -> None:
    recs, ladder = lab.mmlu[:120], lab.ladder
    srv = lab.start_server(recs)
    prompts = lab.prompts(recs)
    out = lab.tmp / "batch.jsonl"
    s = lab.batch(LabelConfig(prompts, out, progress=False), srv, bucket, records_per_file=50)
    assert (s.status, s.labeled, s.calls, s.failed) == ("complete", 120, 360, 0)
    assert len(srv.batch.jobs) == 3 and srv.stats["batch_records"] == 360
    assert check_against_recorded(out, recs, ladder) > 300
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [r["id"] for r in recs]  # file order kept
    assert all(list(r["results"]) == [t.outcomes_key for t in ladder.tiers] for r in rows)

    # the S3 records are Bedrock's: Anthropic messages bodies in, responses out
    c = lab.clients(srv)
    keys = sorted(o["Key"] for o in c.s3.list_objects_v2(Bucket=bucket)["Contents"])
    inputs = [k for k in keys if k.endswith(".jsonl") and "/input/haiku/" in k]
    assert [k.rsplit("/", 1)[1] for k in inputs] == [
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
    ]  # 50 records per file
    first = s3_lines(c.s3, bucket, inputs[0])[0]
    assert first["recordId"] == "R0000000001"
    assert first["modelInput"] == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": ladder.tiers[0].max_tokens,
        "messages": [{"role": "user", "content": [{"type": "text", "text": recs[0]["prompt"]}]}],
    }
    job = next(iter(srv.batch.jobs.values()))
    outs = [k for k in keys if k.endswith("part-00000.jsonl.out") and f"/{job.job_id}/" in k]
    assert len(outs) == 1
    line = s3_lines(c.s3, bucket, outs[0])[0]
    assert set(line) == {"recordId", "modelInput", "modelOutput"}
    mo = line["modelOutput"]
    assert mo["type"] == "message" and mo["role"] == "assistant"
    assert mo["content"][0]["type"] == "text" and mo["stop_reason"] in ("end_turn", "max_tokens")
    assert set(mo["usage"]) == {"input_tokens", "output_tokens"}
    manifest = [k for k in keys if k.endswith(f"{job.job_id}/manifest.json.out")]
    assert (
        json.loads(c.s3.get_object(Bucket=bucket, Key=manifest[0])["Body"].read())[
            "successRecordCount"
        ]
        == 120
    )

    # the same prompts on demand: the same verdicts at twice the price
    od = lab.tmp / "ondemand.jsonl"
    o = lab.ondemand(LabelConfig(prompts, od, progress=False), c.runtime)
    assert o.model_cost_usd == pytest.approx(2 * s.model_cost_usd)
    assert s.ondemand_cost_usd == pytest.approx(o.model_cost_usd)
    assert_same_scores(rows, od)


def test_batch_cascade_runs_a_round_per_tier(lab: Lab, bucket: str) -> None:
    recs = lab.mmlu[:80]
    srv = lab.start_server(recs)
    prompts = lab.prompts(recs)
    out = lab.tmp / "b.jsonl"
    s = lab.batch(LabelConfig(prompts, out, "cascade", progress=False), srv, bucket)
    assert s.status == "complete"
    rows = read_jsonl(out)
    keys = [t.outcomes_key for t in lab.ladder.tiers]
    jobs = {j.name.rsplit("-", 1)[1]: j for j in srv.batch.jobs.values()}
    fail1 = sum(1 for r in rows if r["results"][keys[0]]["score"] < 0.5)
    assert jobs["haiku"].total == 80 and jobs["sonnet"].total == fail1
    od = lab.tmp / "od.jsonl"
    lab.ondemand(LabelConfig(prompts, od, "cascade", progress=False), lab.runtime(srv))
    assert_same_scores(rows, od)  # the same tiers tried as the on-demand cascade


def test_restart_finds_its_jobs_by_name(lab: Lab, bucket: str) -> None:
    recs = lab.mmlu[:60]
    srv = lab.start_server(recs, batch_start_delay_s=1.5)
    out = lab.tmp / "b.jsonl"
    cfg = LabelConfig(lab.prompts(recs), out, progress=False)
    first = lab.batch(cfg, srv, bucket, max_wait_s=0.1)
    assert first.status == "pending" and first.exit_code == 4 and "re-run" in first.message
    assert len(srv.batch.jobs) == 3
    # the labeling command dies and its state is lost: it must find the jobs by name
    state_path(out).unlink()
    second = lab.batch(cfg, srv, bucket)
    assert second.status == "complete" and second.labeled == 60
    assert len(srv.batch.jobs) == 3  # no job created twice
    check_against_recorded(out, recs, lab.ladder)
    # and a re-run of a finished run changes nothing and creates nothing
    third = lab.batch(cfg, srv, bucket)
    assert (third.status, third.labeled, len(srv.batch.jobs)) == ("complete", 60, 3)


def test_spend_cap_keeps_jobs_from_being_created(lab: Lab, bucket: str) -> None:
    recs = lab.mmlu[:40]
    srv = lab.start_server(recs)
    out = lab.tmp / "b.jsonl"
    s = lab.batch(
        LabelConfig(lab.prompts(recs), out, spend_cap_usd=0.5, progress=False), srv, bucket
    )
    assert s.status == "spend_cap" and s.exit_code == 3 and "--spend-cap" in s.message
    names = sorted(j.name.rsplit("-", 1)[1] for j in srv.batch.jobs.values())
    assert names == ["haiku"]  # sonnet's worst case would pass the cap
    rows = read_jsonl(out)
    assert len(rows) == 40 and all(
        list(r["results"]) == [lab.ladder.tiers[0].outcomes_key] for r in rows
    )
    assert s.model_cost_usd <= 0.5


def test_failed_records_are_reported(lab: Lab, bucket: str) -> None:
    recs = lab.mmlu[:30]
    srv = lab.start_server(recs)
    srv.faults = type(srv.faults)(error_rate=0.2, seed=3)
    out = lab.tmp / "b.jsonl"
    s = lab.batch(LabelConfig(lab.prompts(recs), out, progress=False), srv, bucket)
    assert s.status == "failed" and s.failed > 0 and "500" in s.message
    n_results = sum(len(r["results"]) for r in read_jsonl(out))
    assert n_results + s.failed == 90


def test_control_plane_api(start_server: Any, s3_url: str, bucket: str) -> None:
    srv = start_server([])
    c = boto3.client(
        "bedrock",
        endpoint_url=srv.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    model = next(iter(srv.index.tier_by_model))
    cfg = {
        "roleArn": ROLE,
        "modelId": model,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/nothing/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/out/"}},
    }
    arns = [c.create_model_invocation_job(jobName=f"api-{i}", **cfg)["jobArn"] for i in range(3)]
    assert (
        c.create_model_invocation_job(jobName="api-x", clientRequestToken="tok", **cfg)["jobArn"]
        == c.create_model_invocation_job(jobName="api-y", clientRequestToken="tok", **cfg)["jobArn"]
    )  # idempotent
    with pytest.raises(ClientError) as e:
        c.create_model_invocation_job(jobName="api-0", **cfg)
    assert e.value.response["Error"]["Code"] == "ConflictException"
    with pytest.raises(ClientError) as e:
        c.create_model_invocation_job(jobName="api-z", **{**cfg, "roleArn": "role"})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as e:
        c.get_model_invocation_job(jobIdentifier="abcdefabcdef")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    got = c.get_model_invocation_job(jobIdentifier=arns[0])
    assert got["jobName"] == "api-0" and got["submitTime"].tzinfo is not None
    page = c.list_model_invocation_jobs(nameContains="api-", maxResults=2, sortOrder="Ascending")
    assert [j["jobName"] for j in page["invocationJobSummaries"]] == ["api-0", "api-1"]
    rest = c.list_model_invocation_jobs(
        nameContains="api-", nextToken=page["nextToken"], sortOrder="Ascending"
    )
    assert [j["jobName"] for j in rest["invocationJobSummaries"]] == ["api-2", "api-x"]
    import time

    deadline = time.monotonic() + 10
    while c.get_model_invocation_job(jobIdentifier=arns[0])["status"] != "Failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "no .jsonl input" in c.get_model_invocation_job(jobIdentifier=arns[0])["message"]
    failed = c.list_model_invocation_jobs(statusEquals="Failed")["invocationJobSummaries"]
    assert arns[0] in {j["jobArn"] for j in failed}


def _batch_argv(lab: Lab, srv: Any, s3: str, bucket: str) -> list[str]:
    prompts = lab.prompts(lab.mmlu[:10])
    return lab.label_argv(
        prompts, lab.tmp / "b.jsonl", srv, "--grader", "choice", "--mode", "batch",
        "--s3-endpoint-url", s3, "--bucket", bucket, "--role-arn", ROLE, "--max-attempts", "1",
        "--retry-delay-scale", "0.01", "--poll-seconds", "0.05", "--no-progress",
    )  # fmt: skip


def test_unreachable_s3_is_one_line_naming_the_service_and_exits_1(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = lab.start_server(lab.mmlu[:10])
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert run_cli(_batch_argv(lab, srv, closed, "labels-x")) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "S3" in err and closed in err and "upload" in err
    assert list(lab.tmp.glob("*.jsonl.tmp")) == []


def test_missing_bucket_is_a_usage_error(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    srv = lab.start_server(lab.mmlu[:10])
    assert run_cli(_batch_argv(lab, srv, lab.s3_url, "no-such-bucket-here")) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "--bucket" in err and "no-such-bucket-here" in err
