"""The training table: logs of real prompts in the S3 emulator -> Parquet, in-process and on
Ray Data in local mode, the same rows both ways; then a fit from the table, sampled."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loopback import MotoS3
from realdata import LADDERS

if os.environ.get("CI", "").lower() == "true":  # CI installs the [scale] extra: never skip
    import pyarrow  # noqa: F401
    import ray
else:  # a plain install without [scale] skips these
    pytest.importorskip("pyarrow")
    ray = pytest.importorskip("ray")

from router.ladder import Ladder
from serving.demo import DemoConfig, load_router, run_demo
from training.scale_table import TableSpec, build_table, build_table_ray
from training.table_fit import sample_table

LADDER = LADDERS / "routerbench_subset.toml"


@pytest.fixture(scope="module")
def served_log(trained_bundle: Path, small_outcomes: Path, tmp_path_factory: Any) -> Path:
    """120 requests of real routerbench prompts served by the demo (fake Bedrock), logged."""
    log = tmp_path_factory.mktemp("scale") / "served.jsonl"
    cfg = DemoConfig(str(trained_bundle), str(small_outcomes), str(log), requests=120, seed=3,
                     split="train")  # fmt: skip
    s = run_demo(cfg, load_router(str(trained_bundle)), progress=io.StringIO())
    assert s["log_records"] == 120
    return log


@pytest.fixture
def s3_logs(moto: MotoS3, served_log: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The log as the S3 sink leaves it: batches under a prefix, one of them uploaded twice
    (once gzipped), plus a foreign line; S3 settings in the environment for every reader."""
    env = {"AWS_ENDPOINT_URL_S3": moto.url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    lines = served_log.read_bytes().splitlines(keepends=True)
    s3 = moto.client()
    for i in range(0, len(lines), 50):
        body = b"".join(lines[i : i + 50])
        s3.put_object(Bucket=moto.bucket, Key=f"logs/2026/01/01/batch-{i:04d}.jsonl", Body=body)
    again = gzip.compress(b"".join(lines[:30]) + b'{"not": "a record"}\n')
    s3.put_object(Bucket=moto.bucket, Key="logs/2026/01/02/copy.jsonl.gz", Body=again)
    yield f"s3://{moto.bucket}/logs/"


def _rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.dataset as pds

    return pds.dataset(str(path), format="parquet").to_table().to_pylist()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_ray_local_mode_table_equals_the_in_process_table(
    s3_logs: str, trained_bundle: Path, served_log: Path, tmp_path: Path, moto: MotoS3
) -> None:
    spec = TableSpec.of(LADDER, trained_bundle)
    local = tmp_path / "local.parquet"
    n_local = build_table([s3_logs], spec, local)
    ids = [json.loads(x)["request_id"] for x in served_log.read_text().splitlines()]
    rows = _rows(local)
    assert n_local == len(rows) and 0 < n_local <= len(ids)
    assert len({r["request_id"] for r in rows}) == n_local  # the duplicates are gone
    kept = {r["request_id"] for r in rows}
    assert [r["request_id"] for r in rows] == [i for i in ids if i in kept]  # in log order
    r0 = rows[0]
    assert len(r0["scores"]) == len(Ladder.load(LADDER)) and len(r0["emb"]) > 100
    labelled = [s for r in rows for s in r["scores"] if not math.isnan(s)]
    assert labelled and set(labelled) <= {0.0, 1.0}
    assert all(w >= 1.0 for r in rows for w in r["ipw"] if not math.isnan(w))

    env = {k: v for k, v in __import__("os").environ.items() if k.startswith("AWS_")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})  # fmt: skip
    try:
        n_ray = build_table_ray([s3_logs], spec, str(tmp_path / "ray"), featurizers=1)
    finally:
        ray.shutdown()
    ray_rows = _rows(tmp_path / "ray")
    assert n_ray == n_local == len(ray_rows)
    assert [r["request_id"] for r in ray_rows] == [r["request_id"] for r in rows]
    for a, b in zip(rows, ray_rows, strict=True):
        assert a.keys() == b.keys()
        assert all(_same(a[k], b[k]) for k in a), a["request_id"]


def test_the_fit_samples_a_table_larger_than_its_budget_by_stratum(
    s3_logs: str, trained_bundle: Path, tmp_path: Path
) -> None:
    from training.scale_table import featurizer_digest

    local = tmp_path / "t.parquet"
    n = build_table([s3_logs], TableSpec.of(LADDER, trained_bundle), local)
    ladder = Ladder.load(LADDER)
    digest = featurizer_digest(trained_bundle)
    labels, feats, rep = sample_table(str(local), ladder, digest, budget=n)
    assert rep.sampled == n == len(labels) == len(feats) and rep.rate == 1.0

    import training.table_fit as tf

    old = tf.MIN_PER_STRATUM
    tf.MIN_PER_STRATUM = 5
    try:
        labels, feats, rep = sample_table(str(local), ladder, digest, budget=n // 4, seed=1)
    finally:
        tf.MIN_PER_STRATUM = old
    assert 0 < rep.sampled < n and rep.rate == pytest.approx((n // 4) / n)
    for k, s in rep.strata.items():
        assert s["rate"] == pytest.approx(min(1.0, max(rep.rate, 5 / s["rows"])), rel=1e-5), k
        if s["rows"] <= 5:
            assert s["kept"] == s["rows"], k  # a rare label pattern is kept whole
    # A raised stratum's rows are weighted down to the table's proportion.
    rare = [k for k, s in rep.strata.items() if s["rate"] > rep.rate]
    assert rare
    w = labels.weights
    assert w is not None and np.nanmin(w) < 1.0
    again = sample_table(str(local), ladder, digest, budget=n // 4, seed=1)[0]
    assert sample_table(str(local), ladder, digest, budget=n // 4, seed=1)[0].ids == again.ids

    with pytest.raises(ValueError, match="another featurizer"):
        sample_table(str(local), ladder, "0" * 64, budget=n)


def test_retrain_from_a_table_fits_the_base_and_the_sample(
    s3_logs: str,
    trained_bundle: Path,
    small_outcomes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import training.table_fit as tf
    from tier_router.registry_cli import main as cli

    monkeypatch.setattr(tf, "MIN_PER_STRATUM", 5)  # 120 rows: let the budget of 40 bind
    table = tmp_path / "t.parquet"
    n = build_table([s3_logs], TableSpec.of(LADDER, trained_bundle), table)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "challenger"
    rc = cli(["retrain", "--outcomes", str(small_outcomes), "--table", str(table),
              "--tiers", str(LADDER), "--out", str(out), "--model", "", "--folds", "2",
              "--bootstrap", "0", "--table-rows", "40"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    fb = json.loads(captured.out.split("\n}\n")[0] + "}")["feedback"]
    assert fb["feedback_records"] == n and 0 < fb["feedback_rows"] < n
    report = json.loads((out / "train_report.json").read_text())
    assert report["train_prompts"] == fb["base_rows"] + fb["feedback_rows"]
    assert report["model_selection"]  # the unchanged out-of-fold selection ran

    rc = cli(["retrain", "--outcomes", str(small_outcomes), "--table", str(tmp_path / "none"),
              "--tiers", str(LADDER), "--out", str(out), "--model", ""])  # fmt: skip
    assert rc == 2 and "--table" in capsys.readouterr().err
