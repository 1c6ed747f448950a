"""The README's loop, run as written, and every command's stdout read as a script would.

The `tier-router` lines of the README block marked `readme-loop` are read from README.md
and run in order (in process, in a scratch directory laid out like a clone, with a slice
of the shipped sample in place of the sample), so the README stays true. Every command
of `tier-router` must leave on stdout either one JSON document or nothing: the loop's
commands are checked here, and the rest of the commands below, on the loop's bundles.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tier_router.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = "data/sample/mmlu_pro_answers_sample.jsonl.gz"
LADDER = "data/ladders/mmlu_pro_answers.toml"
# Commands whose stdout this module reads; a new command must be added (and checked).
# (`batch` prints its summary as one document: tests/serving/test_batch_serving.py reads
# it with json.loads in the kill-and-resume test.)
CHECKED = {
    "train", "promote", "demo", "feedback", "retrain", "compare", "pull",  # the loop
    "route", "score", "replay", "evaluate", "policy", "monitor", "label", "local-bedrock",
    "export-onnx", "table", "batch",
}  # fmt: skip


def readme_loop() -> list[list[str]]:
    """The argv of each `tier-router` line in README.md's readme-loop block."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- readme-loop:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [shlex.split(x, comments=True) for x in block.splitlines()]
    cmds = [argv[1:] for argv in lines if argv and argv[0] == "tier-router"]
    assert len(cmds) == len([x for x in block.splitlines() if x.strip()]), "non-CLI line"
    return cmds


def stdout_document(out: str) -> Any:
    """What a script reading stdout gets: one JSON document, or None for empty stdout."""
    if not out.strip():
        return None
    return json.loads(out)  # raises on a table, a second document or trailing text


def _slice_sample(dst: Path, n_train: int = 450, n_test: int = 120) -> None:
    rows: dict[str, list[str]] = {"train": [], "test": []}
    with gzip.open(REPO / SAMPLE, "rt", encoding="utf-8") as f:
        for line in f:
            rows[json.loads(line)["split"]].append(line)
    dst.parent.mkdir(parents=True)
    with gzip.open(dst, "wt", encoding="utf-8") as f:
        for split, n in (("train", n_train), ("test", n_test)):
            f.writelines(rows[split][:: len(rows[split]) // n][:n])


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A clone-like directory where the README loop ran; each command's rc and stdout."""
    root = tmp_path_factory.mktemp("clone")
    _slice_sample(root / SAMPLE)
    (root / "data" / "ladders").mkdir()
    shutil.copy(REPO / LADDER, root / LADDER)
    ran: list[tuple[list[str], int, str, str]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        for argv in readme_loop():
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(argv)
            ran.append((argv, rc, out.getvalue(), err.getvalue()))
    return {"root": root, "ran": ran}


def test_the_readme_loop_runs_as_written(loop: dict[str, Any]) -> None:
    ran = loop["ran"]
    names = [argv[0] for argv, *_ in ran]
    assert names == [
        "train", "promote", "demo", "feedback", "retrain", "compare", "promote", "pull"
    ]  # fmt: skip
    for argv, rc, _out, err in ran:
        last_promote = argv[0] == "promote" and "2" in argv
        assert rc in ((0, 1) if last_promote else (0,)), f"{shlex.join(argv)}: rc {rc}\n{err}"
        assert "deprecated" not in err, f"the README uses an old flag: {shlex.join(argv)}"
    docs = {i: stdout_document(out) for i, (_, _, out, _) in enumerate(ran)}
    train, demo, feedback, retrain, compare, promote2 = (docs[i] for i in (0, 2, 3, 4, 5, 6))
    assert train["mlflow"]["registered_model"] == "tier-router"
    assert train["mlflow"]["registered_version"] == "1"
    assert demo["failed"] == 0 and demo["log_records"] == demo["requests"] == 200
    assert demo["elapsed_s"] >= 0 and feedback["elapsed_s"] >= 0
    assert demo["saved_usd"] == pytest.approx(
        demo["always_top_cost_usd"] - demo["cost_usd"], abs=1e-5
    )
    assert isinstance(demo["goal_met"], bool) and demo["goal"] == "top-1"
    assert feedback["records_read"] == 200 and feedback["written"] > 0
    # The cascade's verdicts are predictions; the labels are the demo's grades (a
    # downstream check's), joined by request id: every answered call is graded.
    assert demo["grades"] >= 200 and feedback["graded_labels"] >= 200
    # Train-split prompts: retrain keeps their labels. (A few MMLU-Pro questions appear
    # in both splits with the same text; those alone are kept out.) The first judged
    # answer of each request is a row (plus the next tier's, weighted, where explored).
    fb = retrain["feedback"]
    assert fb["feedback_rows"] >= 180 and fb["dropped_eval_overlap"] <= 5
    assert fb["grades"]["grades"] == demo["grades"]
    assert retrain["mlflow"]["registered_version"] == "2"
    assert retrain["champion"]["version"] == "1" and retrain["verdict"] is not None
    assert [v["version"] for v in compare["versions"]] == ["1", "2"]
    assert compare["versions"][0]["metrics"]["policy.cost_usd_per_request"] > 0  # unit named
    assert promote2["version"] == "2" and promote2["compared"] is True
    assert promote2["promoted"] == (ran[6][1] == 0) == promote2["verdict"]["ok"]
    assert docs[7]["model"] == "tier-router" and (loop["root"] / "bundles/serving").is_dir()
    # Nothing but what the commands were told to write is left in the clone.
    left = {p.name for p in loop["root"].iterdir()}
    assert not [n for n in left if n.endswith(".png")], left


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, stdout_document(cap.out), cap.err


def test_every_command_prints_one_json_document_or_nothing(
    loop: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = loop["root"]
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    b, data = str(root / "bundles/sample"), str(root / SAMPLE)
    rc, doc, _ = _run(["route", "--bundle", b, "What is 2 + 2?"], capsys)
    assert rc == 0 and doc["tier"] in ("haiku", "sonnet", "opus")
    for cmd in ("score", "replay"):
        out = tmp_path / f"{cmd}.jsonl"
        rc, doc, _ = _run([cmd, "--bundle", b, "--outcomes", data, "--out", str(out)], capsys)
        assert rc == 0 and doc is None and out.stat().st_size > 0
    rc, doc, err = _run(["evaluate", "--bundle", b, "--outcomes", data, "--bootstrap", "0"], capsys)
    assert rc == 0 and doc is None and "pgr_auc" in err
    argv = ["evaluate", "--bundle", b, "--outcomes", data, "--bootstrap", "0", "--json"]
    rc, doc, _ = _run(argv, capsys)
    assert rc == 0 and "pgr_auc" in doc["router"]
    rc, doc, err = _run(["policy", "--bundle", b, "--goal", "mid", "--out", str(tmp_path / "p")],
                        capsys)  # fmt: skip
    assert rc == 0 and doc["goal"] == "mid" and "cost/top" in err
    log = root / "demo-log.jsonl"
    rc, doc, err = _run(["monitor", "--log", str(log), "--window-requests", "100"], capsys)
    assert rc == 0 and doc is None and "n=100" in err
    rc, doc, _ = _run(["monitor", "--log", str(log), "--window-requests", "100", "--json"], capsys)
    assert rc == 0 and doc["records"] == 200 and len(doc["windows"]) == 2
    rc, doc, _ = _run(["export-onnx", "--bundle", b, "--out", str(tmp_path / "r.onnx")], capsys)
    assert rc == 0 and (tmp_path / "r.onnx").stat().st_size > 0 and isinstance(doc, dict)
    argv = ["table", "--log", str(log), "--ladder", str(root / LADDER), "--bundle", b,
            "--out", str(tmp_path / "table")]  # fmt: skip
    rc, doc, _ = _run(argv, capsys)
    assert rc == 0 and isinstance(doc, dict)
    _label_prints_one_document(root, tmp_path, capsys)
    _local_bedrock_prints_one_line(root)


def _label_prints_one_document(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fake_bedrock import LocalBedrock, OutcomeIndex
    from outcomes import read_outcomes
    from router.ladder import Ladder

    prompts = tmp_path / "prompts.jsonl"
    lines = (REPO / "data/sample/prompts.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ladder = Ladder.load(root / LADDER)
    with LocalBedrock(ladder, OutcomeIndex(read_outcomes(REPO / SAMPLE), ladder)) as srv:
        argv = ["label", "--prompts", str(prompts), "--ladder", str(root / LADDER), "--grader",
                "choice", "--mode", "ondemand", "--endpoint-url", srv.url, "--dummy-credentials",
                "--out", str(tmp_path / "labeled.jsonl")]  # fmt: skip
        rc, doc, _ = _run(argv, capsys)
    assert rc == 0 and doc["cost_usd"] >= 0 and doc["elapsed_s"] >= 0


def _local_bedrock_prints_one_line(root: Path) -> None:
    """A server: its stdout is one JSON line, then nothing while it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tier_router.cli", "local-bedrock", "--outcomes", str(root / SAMPLE),
         "--ladder", str(root / LADDER), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert json.loads(first)["port"] > 0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert out == ""


def test_this_module_reads_every_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    assert set(sub.choices) == CHECKED


def test_the_readme_local_server_client_example_runs(
    loop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's "Offline, against the local server" snippet, on a local server (its port
    swapped for a free one), after the Serving section's own imports."""
    from fake_bedrock import LocalBedrock, OutcomeIndex
    from outcomes import read_outcomes
    from router.ladder import Ladder

    text = (REPO / "README.md").read_text(encoding="utf-8")
    serving = text.split("## Serving on Bedrock", 1)[1]
    imports = serving.split("```python\n", 1)[1].split("router = Router.load", 1)[0]
    snippet = serving.split("**Offline, against the local server.**", 1)[1]
    snippet = snippet.split("```python\n", 1)[1].split("```", 1)[0]
    root = loop["root"]
    monkeypatch.chdir(root)
    ladder = Ladder.load(root / LADDER)
    with LocalBedrock(ladder, OutcomeIndex(read_outcomes(root / SAMPLE), ladder)) as srv:
        code = imports + snippet.replace("http://127.0.0.1:8765", srv.url)
        names: dict[str, Any] = {}
        exec(compile(code, "README.md", "exec"), names)
        names["client"].logger.close()
    assert (root / "local-outcomes.jsonl").read_text(encoding="utf-8").count("\n") == 1
