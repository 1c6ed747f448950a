"""Streaming readers at scale: `feedback` and `monitor` over synthetic logs, peak RSS and
records/s.

    python benchmarks/log_stream.py --sizes 1000000,5000000 --dir /tmp/tier-router-logs

For each size, writes a gzipped synthetic log (benchmarks/make_logs.py; reused when
present), then runs each reader in a fresh child process and reports its peak resident
set (VmHWM of /proc/self/status, which covers the whole child: interpreter, imports,
reading)
and records per second:
- feedback: `training.feedback.build_outcomes` (read, parse, dedupe, label, encode; the
  outcomes lines go to /dev/null, as compressing them is not what is measured);
- monitor: `serving.metrics.iter_windows` over `read_log` with 300 s windows, EMF lines
  formatted per window (what `tier-router monitor` does).
An `imports` child reports the RSS of the imports alone, the floor the others start from.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TIERS = REPO / "data" / "ladders" / "mmlu_pro.toml"


def _peak_rss_mb() -> float:
    """This process's peak resident set since its exec: VmHWM from /proc (ru_maxrss would
    also count the forking parent's pages, which it keeps across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(kind: str, log: Path) -> dict[str, float | int | str]:
    from router.ladder import Ladder
    from serving.metrics import emf_lines, iter_windows
    from serving.outcome_log import ReadStats, read_log
    from training.feedback import build_outcomes

    ladder = Ladder.load(TIERS)
    t0 = time.perf_counter()
    if kind == "imports":
        return {"kind": kind, "peak_rss_mb": round(_peak_rss_mb(), 1)}
    if kind == "feedback":
        st = build_outcomes([log], ladder, Path(os.devnull))  # the writing is not what is timed
        n, extra = st.records_read, {"written": st.written, "duplicates": st.skipped_duplicate}
    else:
        stats = ReadStats()
        names = ladder.names
        wins = 0
        for w in iter_windows(read_log([log], stats), window_s=300.0):
            emf_lines(w, names)
            wins += 1
        n, extra = stats.records, {"windows": wins}
    secs = time.perf_counter() - t0
    return {
        "kind": kind,
        "records": n,
        "seconds": round(secs, 1),
        "records_per_s": round(n / secs),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        **extra,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tier-router-logs"))
    ap.add_argument("--child", nargs=2, metavar=("KIND", "LOG"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], Path(a.child[1]))))
        return 0
    from make_logs import write_logs  # beside this script

    from router.ladder import Ladder

    rows = []
    for n in (int(x) for x in a.sizes.split(",")):
        log = a.dir / f"synthetic-{n}.jsonl.gz"
        if not log.exists():
            t = time.perf_counter()
            size = write_logs(log, n, Ladder.load(TIERS))
            print(f"wrote {log} ({size / 1e6:.0f} MB gz) in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
        for kind in ("imports", "feedback", "monitor"):
            if kind == "imports" and rows:
                continue
            cmd = [sys.executable, __file__, "--dir", str(a.dir), "--child", kind, str(log)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
            res["size"] = n
            rows.append(res)
            print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
