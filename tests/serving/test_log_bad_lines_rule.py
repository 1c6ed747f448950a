"""One rule for bad lines in outcome logs, in every command that reads them (issue 23/24).

A log may end in a torn line after a crash, or hold a line some other tool wrote: such
lines are skipped and counted, the command says so on stderr, and it fails (exit 2) only
when no outcome record is left. `monitor` used to exit 2 on a single foreign line where
`feedback` skipped it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from serving.demo import DemoConfig, load_router, run_demo
from tier_router.cli import main


@pytest.fixture(scope="module")
def log_with_bad_lines(
    trained_bundle: Path, small_outcomes: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    log = tmp_path_factory.mktemp("logs") / "served.jsonl"
    cfg = DemoConfig(str(trained_bundle), str(small_outcomes), str(log), requests=30, seed=4,
                     prompt_storage="store")  # fmt: skip  # feedback writes the text
    assert run_demo(cfg, load_router(str(trained_bundle)), progress=io.StringIO())[
        "log_records"] == 30  # fmt: skip
    lines = log.read_text(encoding="utf-8").splitlines()
    foreign = json.dumps({"kind": "heartbeat", "ok": True})
    lines[10:10] = [foreign]  # JSON, but not an outcome record
    log.write_text("\n".join(lines) + "\n" + '{"request_id": "torn', encoding="utf-8")
    return log


def test_feedback_and_monitor_skip_and_count_the_same_lines(
    log_with_bad_lines: Path,
    small_ladder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "fb.jsonl"
    argv = ["feedback", "--log", str(log_with_bad_lines), "--ladder", str(small_ladder)]
    assert main([*argv, "--out", str(out)]) == 0
    cap = capsys.readouterr()
    fb = json.loads(cap.out)
    assert fb["bad_lines"] == 1 and fb["skipped_not_outcome_record"] == 1
    assert "skipped 1 unreadable line(s) and 1 line(s) that are not outcome records" in cap.err

    argv = ["monitor", "--log", str(log_with_bad_lines), "--window-requests", "100", "--json"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    mon = json.loads(cap.out)
    assert mon["records"] == 30
    assert mon["skipped_unreadable_lines"] == 1 and mon["skipped_not_outcome_records"] == 1
    assert "1 unreadable line(s) skipped" in cap.err
    assert "1 line(s) that are not outcome records skipped" in cap.err


def test_a_log_with_no_outcome_record_is_an_error_in_both(
    small_ladder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"kind": "heartbeat"}\nnot json\n', encoding="utf-8")
    out = tmp_path / "fb.jsonl"
    argv = ["feedback", "--log", str(junk), "--ladder", str(small_ladder), "--out", str(out)]
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "no outcome records" in cap.err and not out.exists()
    assert main(["monitor", "--log", str(junk)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "no outcome records" in cap.err
    assert "1 unreadable line(s), 1 JSON line(s) that are not outcome records" in cap.err


def test_old_flag_names_still_work_and_say_which_to_use(
    log_with_bad_lines: Path,
    small_ladder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "fb.jsonl"
    argv = ["feedback", "--log", str(log_with_bad_lines), "--tiers", str(small_ladder)]
    assert main([*argv, "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "--tiers is deprecated; use --ladder (same meaning)" in cap.err
    assert json.loads(cap.out)["written"] > 0  # same result as with --ladder
