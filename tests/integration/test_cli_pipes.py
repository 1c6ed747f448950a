"""`tier-router` as a shell pipeline stage: a reader that stops early (`| head`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_route_into_a_closed_pipe_exits_quietly(trained_bundle: Path) -> None:
    cmd = [sys.executable, "-m", "tier_router.cli", "route", "--bundle", str(trained_bundle),
           "Compare the fiscal policies of Japan and Germany in the 1990s."]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the decision is printed, as with `| head -0`
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert rc == 1  # what Python's own docs advise for EPIPE: no output, a failing status
