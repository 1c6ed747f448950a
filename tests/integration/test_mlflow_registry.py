"""Registry loop against a real `mlflow server` (sqlite backend, proxied artifacts).

Data: 600 train + 300 test prompts of the real mmlu_pro file, where the prompt text
predicts difficulty (subject), so a router that ignores the text is honestly worse.
Version 1 is the normal recipe; version 2 has one cluster: every prompt gets the same
P(pass), so it can only route by prompt length. Promotion, pull, compare and retrain
run through the CLI handlers.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loopback import free_port as _free_port

from outcomes import read_outcomes
from router import Router
from router.bundle import sha256_file
from tier_router.registry_cli import main as cli
from training.model import ModelConfig
from training.pipeline import TrainConfig
from training.selection import SelectionConfig

MODEL = "tier-router"
LADDERS = Path(__file__).resolve().parents[2] / "data" / "ladders"
TIERS = ("haiku", "sonnet", "opus")
REQUIRED_METRICS = [
    "test.pgr_auc",
    "test.cost_at_top",
    "test.cost_at_mid",
    "test.best_q",
    "test.policy.cost",
    "test.policy.quality",
    "test.policy.cost_vs_top",
    "route.p50_us",
    "route.p99_us",
    *(f"test.calibration_error.{t}" for t in TIERS),
    *(f"test.policy.tier_share.{t}" for t in TIERS),
]
REQUIRED_PARAMS = [
    "ladder",
    "ladder.prices_in",
    "ladder.prices_out",
    "featurizer",
    "model",
    "model.n_clusters",
    "model.temperature",
    "goal",
    "train_file",
    "train_file_sha256",
    "train_rows",
    "eval_split",
    "eval_rows",
]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    artifacts = root / "artifacts"
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [
        str(mlflow_bin),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts.as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (root / "server.log").open("wb")
    # No job runner: it forks a pool of huey consumers this test does not use.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 150
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
        time.sleep(0.5)
    try:
        yield url, artifacts
    finally:  # the server and its uvicorn worker share the session we started
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def mmlu_small(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Evenly spaced 600 train and 300 test lines of the real mmlu_pro file, verbatim."""
    rows: dict[str, list[str]] = {"train": [], "test": []}
    with gzip.open(shared_data / "mmlu_pro.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            split = json.loads(line).get("split")
            if split in rows:
                rows[split].append(line)
    out = tmp_path_factory.mktemp("mmlu") / "mmlu_small.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for split, n in (("train", 600), ("test", 300)):
            f.writelines(rows[split][:: len(rows[split]) // n][:n])
    return out


@pytest.fixture(scope="module")
def ladder() -> Path:
    return LADDERS / "mmlu_pro.toml"


@pytest.fixture(scope="module")
def registry(
    mlflow_server: tuple[str, Path],
    mmlu_small: Path,
    ladder: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Versions 1 (the recipe) and 2 (text-blind, one cluster) logged to the server."""
    from training.runs import train_evaluate_log

    url, _ = mlflow_server
    out = tmp_path_factory.mktemp("reg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", url)
        runs = {}
        # Both soft-cluster models (no model selection): "worse" has one cluster and no
        # category head, blind to the text.
        for key, clusters, head in (("good", (8, 24), 0.5), ("worse", (1,), 0.0)):
            families = ("soft_cluster",)
            cfg = TrainConfig(
                outcomes=mmlu_small,
                tiers=ladder,
                out=out / key,
                featurizer="fast",
                goal="mid",
                folds=3,
                model=ModelConfig(n_clusters=clusters, task_weight=head),
                selection=SelectionConfig(families=families),
            )
            runs[key] = train_evaluate_log(cfg, mlflow=True, registered_model=MODEL)
        yield {"url": url, "runs": runs, "dir": out}


@pytest.fixture
def tracking(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["url"])
    from mlflow import MlflowClient

    return MlflowClient()


def _test_prompts(path: Path, n: int = 60) -> list[str]:
    return [r.prompt for r in read_outcomes(path, split="test")[:n]]


def test_two_trainings_register_versions_with_metrics_and_plots(
    registry: dict[str, Any], tracking: Any, mmlu_small: Path
) -> None:
    import mlflow.pyfunc

    runs = registry["runs"]
    assert [runs[k]["mlflow"]["registered_version"] for k in ("good", "worse")] == ["1", "2"]
    for key, version in (("good", "1"), ("worse", "2")):
        mv = tracking.get_model_version(MODEL, version)
        assert mv.run_id == runs[key]["mlflow"]["run_id"]
        assert mv.tags["router_version"] == runs[key]["router_version"]
        run = tracking.get_run(mv.run_id)
        missing = [m for m in REQUIRED_METRICS if m not in run.data.metrics]
        assert not missing, f"v{version} lacks metrics {missing}"
        assert not [p for p in REQUIRED_PARAMS if p not in run.data.params]
        assert run.data.params["train_file_sha256"] == sha256_file(mmlu_small)
        assert run.data.params["eval_split"] == "test"
        plot_files = tracking.list_artifacts(mv.run_id, "plots")
        plots = {Path(a.path).name for a in plot_files}
        assert plots == {"curve.png", "calibration.png", "tier_mix.png"}
        bundle_files = {Path(a.path).name for a in tracking.list_artifacts(mv.run_id, "bundle")}
        assert {"manifest.json", "model.onnx", "policy.json", "ladder.toml"} <= bundle_files
        shares = [run.data.metrics[f"test.policy.tier_share.{t}"] for t in TIERS]
        assert sum(shares) == pytest.approx(1.0)
    # The ONNX flavor serves through MLflow's own loader and agrees with the runtime.
    router = Router.load(runs["good"]["bundle"])
    prompts = _test_prompts(mmlu_small, 20)
    served = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(router.feeds(prompts))
    got = np.asarray(next(iter(served.values())) if isinstance(served, dict) else served)
    np.testing.assert_allclose(got, router.p_pass_batch(prompts), atol=1e-6)
    # The text-blind run really is a worse router on the held-out split.
    assert runs["worse"]["test"]["pgr_auc"] < runs["good"]["test"]["pgr_auc"]


def test_promote_moves_alias_and_refuses_worse(
    registry: dict[str, Any], tracking: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["promote", "--model", MODEL, "--version", "1"]) == 0
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "1"
    capsys.readouterr()

    assert cli(["promote", "--model", MODEL, "--version", "2", "--json"]) == 1
    out = capsys.readouterr()
    assert "refused" in out.err and "--force" in out.err
    assert "quality at that cost: champion" in out.err and "worse:" in out.err
    doc = json.loads(out.out)  # --json: one document on stdout, the report on stderr
    assert doc["promoted"] is False and doc["verdict"]["ok"] is False
    assert doc["refused"] and doc["champion_before"] == "1" and doc["version"] == "2"
    # The paired bootstrap says whether the loss is more than this split's luck.
    assert "v2 minus v1, paired over 200 resamples of the same 300 prompts" in out.err
    paired_part = out.err.split("paired over")[1]
    pgr_line = next(ln for ln in paired_part.splitlines() if ln.strip().startswith("pgr_auc "))
    assert pgr_line.split("]")[1].strip() in ("worse", "within noise")
    assert ("within this split's noise" in out.err) == pgr_line.endswith("within noise")
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "1"

    assert cli(["promote", "--model", MODEL, "--version", "2", "--force"]) == 0
    forced = capsys.readouterr()
    assert "(forced)" in forced.err and forced.out == ""
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "2"

    # Back to the better router: v1 ranks prompts far better than champion v2 (paired
    # pgr_auc interval above 0). At the policy's always-middle operating point the two
    # envelopes differ by well under 1% of cost either way, so a 1% tolerance, not
    # --force, is what lets it through.
    capsys.readouterr()
    assert cli(["promote", "--model", MODEL, "--version", "1", "--tolerance", "0.01"]) == 0
    out = capsys.readouterr().err
    assert "v1 minus v2, paired" in out
    pgr_line = next(ln for ln in out.split("paired over")[1].splitlines() if "pgr_auc" in ln)
    assert pgr_line.endswith("better")
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "1"


def test_promote_rejects_bad_input(
    registry: dict[str, Any], tracking: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        cli(["promote", "--version", "0"])
    assert e.value.code == 2 and "--version" in capsys.readouterr().err
    assert cli(["promote", "--model", MODEL, "--version", "99"]) == 2
    assert "tier-router promote: error" in capsys.readouterr().err


def test_pull_routes_like_the_trained_bundle(
    registry: dict[str, Any],
    tracking: Any,
    mmlu_small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli(["pull", "--model", f"{MODEL}@champion", "--out", str(tmp_path / "b")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == "1"
    pulled = Router.load(tmp_path / "b")
    trained = Router.load(registry["runs"]["good"]["bundle"])
    assert pulled.version == trained.version
    prompts = _test_prompts(mmlu_small)
    assert [pulled.route(p).tier for p in prompts] == [trained.route(p).tier for p in prompts]
    np.testing.assert_array_equal(pulled.p_pass_batch(prompts), trained.p_pass_batch(prompts))
    # NAME/VERSION form, and pulling over an existing bundle replaces it.
    assert cli(["pull", "--model", f"{MODEL}/2", "--out", str(tmp_path / "b")]) == 0
    assert Router.load(tmp_path / "b").version == registry["runs"]["worse"]["router_version"]
    assert cli(["pull", "--model", f"{MODEL}@nosuchalias", "--out", str(tmp_path / "c")]) == 2
    assert "not found" in capsys.readouterr().err


def test_compare_prints_versions_and_logs_overlay(
    registry: dict[str, Any], tracking: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "overlay.png"
    args = ["compare", "--model", MODEL, "--versions", "1,2", "--png", str(png)]
    assert cli([*args, "--bootstrap", "60", "--json"]) == 0
    cap = capsys.readouterr()
    out = cap.err
    doc = json.loads(cap.out)
    assert [v["version"] for v in doc["versions"]] == ["1", "2"] and doc["png"] == str(png)
    assert doc["paired"][0]["version"] == "v2" and doc["run_id"]
    assert "v1" in out and "v2" in out and "pgr_auc" in out and "route.p99_us" in out
    assert "v2 minus v1, paired over 60 resamples" in out  # v1 is the champion here
    assert png.stat().st_size > 10_000
    exp = tracking.get_experiment_by_name("tier-router-comparisons")
    run = tracking.search_runs([exp.experiment_id], order_by=["start_time DESC"])[0]
    m = run.data.metrics
    assert m["v1.pgr_auc"] > m["v2.pgr_auc"]
    assert m["v2-v1.pgr_auc"] == pytest.approx(m["v2.pgr_auc"] - m["v1.pgr_auc"], abs=1e-9)
    assert m["v2-v1.pgr_auc.lo"] <= m["v2-v1.pgr_auc"] <= m["v2-v1.pgr_auc.hi"]
    assert [a.path for a in tracking.list_artifacts(run.info.run_id, "plots")] == [
        "plots/overlay.png"
    ]


def _serving_log(ref: str, outcomes: Path, tmp_path: Path, requests: int) -> Path:
    """An outcome log of `requests` demo requests (train-split prompts) served by `ref`."""
    from serving.demo import DemoConfig, run_demo

    bundle, log = tmp_path / "served", tmp_path / "outcomes.jsonl"
    assert cli(["pull", "--model", ref, "--out", str(bundle)]) == 0
    cfg = DemoConfig(
        bundle=str(bundle), outcomes=str(outcomes), log=str(log), split="train", requests=requests
    )
    assert run_demo(cfg, Router.load(bundle), progress=io.StringIO())["log_records"] == requests
    return log


def test_retrain_from_demo_log_registers_challenger(
    registry: dict[str, Any],
    tracking: Any,
    mmlu_small: Path,
    ladder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = _serving_log(f"{MODEL}@champion", mmlu_small, tmp_path, 80)
    capsys.readouterr()
    rc = cli(
        [
            "retrain",
            "--outcomes",
            str(mmlu_small),
            "--log",
            str(log),
            "--ladder",
            str(ladder),
            "--out",
            str(tmp_path / "challenger"),
            "--goal",
            "mid",
            "--clusters",
            "8,24",
            "--folds",
            "3",
        ]
    )
    assert rc == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)  # stdout: one JSON document; the table is on stderr
    assert doc["challenger"]["version"] == "3" and doc["champion"]["version"] == "1"
    assert doc["verdict"] is not None and doc["promoted"] is False
    out = cap.err
    assert "champion v1" in out and "challenger v3" in out
    assert "challenger v3 minus champion v1, paired over 200 resamples" in out
    assert "quality at that cost" in out
    mv = tracking.get_model_version(MODEL, "3")
    params = tracking.get_run(mv.run_id).data.params
    assert params["retrain.label_rule"] == "first-attempt"
    assert int(params["retrain.feedback_rows"]) == 80
    assert int(params["train_rows"]) == 600 + 80
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "1"


def test_pull_refuses_a_tampered_bundle(
    registry: dict[str, Any],
    mlflow_server: tuple[str, Path],
    tracking: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, artifacts = mlflow_server
    run_id = registry["runs"]["worse"]["mlflow"]["run_id"]
    [policy] = [p for p in artifacts.rglob("policy.json") if run_id in str(p)]
    policy.write_text(policy.read_text().replace('"goal"', '"goal" ', 1))
    assert cli(["pull", "--model", f"{MODEL}/2", "--out", str(tmp_path / "t")]) == 2
    assert "integrity check failed" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_champion_this_version_cannot_read_is_not_compared_and_needs_force(
    registry: dict[str, Any], tracking: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Version 2's bundle was damaged in the artifact store by the test above; a bundle of
    # an older format is refused on load the same way (BundleError).
    tracking.set_registered_model_alias(MODEL, "champion", "2")
    capsys.readouterr()
    assert cli(["promote", "--model", MODEL, "--version", "1"]) == 1
    err = capsys.readouterr().err
    assert "champion version 2 cannot be compared" in err and "integrity check failed" in err
    assert "--force" in err
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "2"
    assert cli(["promote", "--model", MODEL, "--version", "1", "--force"]) == 0
    assert "(forced, not compared)" in capsys.readouterr().err
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "1"


def test_retrain_says_why_an_unreadable_champion_is_not_compared(
    registry: dict[str, Any],
    tracking: Any,
    mmlu_small: Path,
    ladder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = _serving_log(f"{MODEL}/1", mmlu_small, tmp_path, 20)
    tracking.set_registered_model_alias(MODEL, "champion", "2")  # damaged above
    capsys.readouterr()
    rc = cli(
        ["retrain", "--outcomes", str(mmlu_small), "--feedback", str(log), "--tiers", str(ladder),
         "--out", str(tmp_path / "challenger"), "--goal", "mid", "--clusters", "8", "--folds",
         "2", "--promote"]
    )  # fmt: skip
    assert rc == 0
    cap = capsys.readouterr()
    assert "champion v2 cannot be compared" in json.loads(cap.out)["champion_error"]
    out = cap.err
    assert "champion v2 cannot be compared" in out and "integrity check failed" in out
    assert "challenger not promoted" in out and "--force" in out
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "2"
    tracking.set_registered_model_alias(MODEL, "champion", "1")


def test_one_registered_model_per_ladder(
    registry: dict[str, Any], tracking: Any, small_ladder: Path, ladder: Path
) -> None:
    from training.registry import RegistryError
    from training.runs import pick_registered_model

    # The default model holds mmlu_pro's versions: the same ladder joins it...
    assert pick_registered_model(ladder, None) == (MODEL, None)
    # ...another ladder gets a model of its own, derived from the ladder, and says so...
    name, note = pick_registered_model(small_ladder, None)
    assert name.startswith(f"{MODEL}-routerbench_subset-") and note and name in note
    assert pick_registered_model(small_ladder, None)[0] == name  # the same every time
    # ...and naming the mixed model explicitly is refused before any training.
    with pytest.raises(RegistryError) as e:
        pick_registered_model(small_ladder, MODEL)
    msg = str(e.value)
    assert "claude-instant-v1" in msg and "Meta-Llama-3.1-8B-Instruct" in msg
    assert f"--registered-model {name}" in msg
    assert pick_registered_model(small_ladder, "") == (None, None)


def test_compare_and_promote_across_ladders_refuse_naming_both(
    registry: dict[str, Any],
    tracking: Any,
    trained_bundle: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A model that already mixes ladders (as every train did before one model per
    ladder): compare and promote refuse before scoring, naming both versions and ladders."""
    from training.registry import LADDER_TAG, signature_of
    from training.tracking import log_training_run

    mixed = "tier-router-mixed"
    for bundle in (Path(registry["runs"]["good"]["bundle"]), trained_bundle):
        r = Router.load(bundle)
        log_training_run(
            params={"featurizer": "fast"},
            metrics={},
            artifacts=[],
            bundle=bundle,
            tags={"router_version": r.version, LADDER_TAG: signature_of(r.ladder)},
            registered_model=mixed,
        )
    assert cli(["promote", "--model", mixed, "--version", "1"]) == 0
    capsys.readouterr()
    assert cli(["compare", "--model", mixed, "--no-log", "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    for needed in ("version 1", "version 2", "Meta-Llama-3.1-8B-Instruct", "claude-instant-v1",
                   "not comparable"):  # fmt: skip
        assert needed in cap.err
    assert "no prompts in split" not in cap.err  # refused before scoring anything
    assert cli(["promote", "--model", mixed, "--version", "2", "--json"]) == 1
    cap = capsys.readouterr()
    assert "refused" in cap.err and "version 1" in cap.err and "version 2" in cap.err
    assert "claude-instant-v1" in cap.err and "Meta-Llama-3.1-8B-Instruct" in cap.err
    assert json.loads(cap.out)["promoted"] is False
    assert tracking.get_model_version_by_alias(mixed, "champion").version == "1"


def test_compare_leaves_no_png_in_the_working_directory(
    registry: dict[str, Any],
    tracking: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli(["compare", "--model", MODEL, "--versions", "1", "--bootstrap", "0"]) == 0
    assert list(tmp_path.iterdir()) == []  # the overlay went to the comparison run only
    cap = capsys.readouterr()
    assert cap.out == ""  # no --json: stdout stays empty
    run_id = cap.err.split("logged comparison run ")[1].split()[0]
    assert [a.path for a in tracking.list_artifacts(run_id, "plots")] == [
        f"plots/compare-{MODEL}.png"
    ]
