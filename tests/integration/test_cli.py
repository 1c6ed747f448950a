"""`tier-router train | score | route | evaluate` on a slice of real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tier_router.cli import main


@pytest.fixture(scope="module")
def cli_bundle(
    tmp_path_factory: pytest.TempPathFactory, small_outcomes: Path, small_ladder: Path
) -> tuple[Path, dict]:
    import os

    out = tmp_path_factory.mktemp("cli") / "bundle"
    db = out.parent / "mlflow.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    try:
        import io
        from contextlib import redirect_stdout

        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = main(
                [
                    "train",
                    "--outcomes",
                    str(small_outcomes),
                    "--tiers",
                    str(small_ladder),
                    "--out",
                    str(out),
                    "--clusters",
                    "8,24",
                    "--folds",
                    "3",
                    "--goal",
                    "mid",
                    "--seed",
                    "3",
                ]
            )
        assert rc == 0
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return out, json.loads(buf.getvalue())


def test_train_writes_bundle_evaluates_and_logs_mlflow(cli_bundle: tuple[Path, dict]) -> None:
    out, summary = cli_bundle
    assert (out / "manifest.json").is_file()
    report = json.loads((out / "train_report.json").read_text())
    assert report["seed"] == 3 and report["model"]["seed"] == 3  # k-means gets --seed too
    assert summary["test"]["pgr_auc"] > 0.3
    assert set(summary["test"]) >= {"cost_at_top", "cost_at_mid", "best_q", "policy"}
    assert summary["route_latency"]["p50_us"] > 0
    for p in summary["plots"]:
        assert Path(p).read_bytes()[:4] == b"\x89PNG"
    run_id = summary["mlflow"]["run_id"]
    assert summary["mlflow"]["registered_version"] == "1"
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.data.params["featurizer"] == "fast"
    assert "test.pgr_auc" in run.data.metrics and "validation.pgr_auc" in run.data.metrics
    iv = summary["test"]["interval"]["pgr_auc"]
    assert iv["lo"] < iv["hi"]
    assert run.data.metrics["test_interval.pgr_auc.lo"] == pytest.approx(iv["lo"])
    assert run.data.params["test_interval.rounds"] == "200"  # small split: the full count
    arts = {a.path for a in client.list_artifacts(run_id)}
    assert {"bundle", "plots"} <= arts


def test_score_writes_one_line_per_prompt(cli_bundle, small_outcomes: Path, tmp_path: Path):
    out, _ = cli_bundle
    scores = tmp_path / "scores.jsonl"
    assert (
        main(
            [
                "score",
                "--bundle",
                str(out),
                "--outcomes",
                str(small_outcomes),
                "--split",
                "test",
                "--out",
                str(scores),
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in scores.read_text().splitlines()]
    assert len(lines) == 300
    assert set(lines[0]) == {"id", "p_pass", "tier"}
    assert set(lines[0]["p_pass"]) == {"haiku", "sonnet", "opus"}


def test_route_and_evaluate_print_results(
    cli_bundle, small_outcomes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = cli_bundle
    assert (
        main(["route", "--bundle", str(out), "Compare the fiscal policies of Japan and the US"])
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["tier"] in ("haiku", "sonnet", "opus") and "p_pass" in d
    assert d["route_path"] in ("compiled", "python")  # never slow in silence
    plot = tmp_path / "curve.png"
    assert (
        main(
            [
                "evaluate",
                "--bundle",
                str(out),
                "--outcomes",
                str(small_outcomes),
                "--plot",
                str(plot),
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    assert cap.out == ""  # the table is for people: stderr; --json puts the numbers on stdout
    text = cap.err
    for word in (
        "pgr_auc",
        "cost_at_top",
        "cost_at_mid",
        "best_q",
        "random",
        "oracle",
        "always haiku",
        "always opus",
        "bundle policy",
        "95% intervals over 200 resamples",
    ):
        assert word in text
    assert plot.read_bytes()[:4] == b"\x89PNG"
    argv = ["evaluate", "--bundle", str(out), "--outcomes", str(small_outcomes), "--plot"]
    assert main([*argv, str(plot), "--json", "--bootstrap", "40"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bootstrap_rounds"] == 40
    iv = rep["router_interval"]["pgr_auc"]
    assert iv["lo"] <= rep["router"]["pgr_auc"] <= iv["hi"]
    assert main([*argv, str(plot), "--json", "--bootstrap", "0"]) == 0
    assert "router_interval" not in json.loads(capsys.readouterr().out)


def test_evaluate_writes_no_plot_unless_asked(
    cli_bundle,
    small_outcomes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = cli_bundle
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = ["evaluate", "--bundle", str(out), "--outcomes", str(small_outcomes)]
    assert main([*argv, "--bootstrap", "0"]) == 0
    assert "cost-quality curve" not in capsys.readouterr().err
    assert main([*argv, "--bootstrap", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plot"] is None
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--outcomes", "/nope.jsonl", "--tiers", "x", "--out", "o"], "no such file"),
        (["route", "--bundle", "/nope", "hi"], "no such bundle"),
        (
            ["train", "--outcomes", __file__, "--tiers", __file__, "--out", "o", "--clusters", "a"],
            "comma-separated",
        ),
        (
            ["train", "--outcomes", __file__, "--tiers", __file__, "--out", "o", "--folds", "0"],
            "positive integer",
        ),
        (
            ["evaluate", "--bundle", "/", "--outcomes", __file__, "--bootstrap", "-3"],
            "--bootstrap",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_bad_files_are_reported_not_crashed(
    tmp_path: Path, small_ladder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "x", "results": {"m": {"score": 1}}}\n{oops\n')

    def train(tiers: Path) -> int:
        argv = ["train", "--outcomes", str(bad), "--tiers", str(tiers), "--no-mlflow"]
        return main([*argv, "--out", str(tmp_path / "b")])

    assert train(small_ladder) == 2
    assert f"{bad}:2: invalid JSON" in capsys.readouterr().err
    lad = tmp_path / "l.toml"
    lad.write_text("[[tier]]\nname = 1\n")
    assert train(lad) == 2
    assert "missing field" in capsys.readouterr().err


def test_train_says_what_failed_when_mlflow_refuses_the_store(
    tmp_path: Path,
    small_outcomes: Path,
    small_ladder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # MLflow 3 refuses the plain file store unless told otherwise: a real misconfiguration.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    out = tmp_path / "bundle"
    args = ["train", "--outcomes", str(small_outcomes), "--tiers", str(small_ladder)]
    rc = main([*args, "--out", str(out), "--clusters", "8", "--folds", "2", "--max-train", "200"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "MLflow logging to file://" in err and "--no-mlflow" in err and str(out) in err
    assert "Traceback" not in err
    assert (out / "manifest.json").is_file()  # the bundle itself is kept


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_an_empty_prompt_on_the_command_line_is_an_error(
    trained_bundle: Path,
    prompt: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["route", "--bundle", str(trained_bundle), prompt]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "tier-router route: error: the prompt argument is empty or whitespace only" in cap.err
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(prompt))
    assert main(["route", "--bundle", str(trained_bundle), "-"]) == 2
    assert "stdin is empty" in capsys.readouterr().err
    # The library still routes it (a service never crashes on one): only the CLI refuses.
    from router import Router

    assert Router.load(trained_bundle).route(prompt).reason.startswith("empty or whitespace")
