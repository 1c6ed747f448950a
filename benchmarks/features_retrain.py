"""Privacy by default, measured: what a log record costs with the prompt's text and with the
router's features, and whether retraining from the features matches retraining from text.

    python benchmarks/features_retrain.py --data ../shared/data/routerbench_subset.jsonl.gz \
        --ladder data/ladders/routerbench_subset.toml --train 2000 --test 1000 --requests 600

Slices the outcomes file (first N train / test prompts), trains a bundle, serves the same
train-split requests through the demo twice (the same seed: the same walks and labels),
once with `--prompt-storage store` and once with the default `features`, then runs
`tier-router retrain --log` on each log. Prints one JSON document: log bytes per record
(whole record and its `prompt` field), the two challengers' held-out metrics, and the
largest difference of their P(pass) on the test split.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _slice(src: Path, dst: Path, n_train: int, n_test: int) -> None:
    want = {"train": n_train, "test": n_test}
    with gzip.open(src, "rt", encoding="utf-8") as f, dst.open("w", encoding="utf-8") as out:
        for line in f:
            split = json.loads(line).get("split")
            if want.get(split, 0) > 0:
                want[split] -= 1
                out.write(line)


def _bytes(log: Path) -> dict[str, float]:
    lines = log.read_bytes().splitlines()
    prompt = [len(json.dumps(json.loads(x)["prompt"], separators=(",", ":"))) for x in lines]
    return {
        "record_bytes_mean": round(sum(len(x) + 1 for x in lines) / len(lines), 1),
        "prompt_field_bytes_mean": round(sum(prompt) / len(prompt), 1),
        "prompt_field_bytes_max": max(prompt),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--ladder", type=Path, required=True)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp one)")
    a = ap.parse_args()

    import numpy as np

    from outcomes import read_outcomes
    from router import Router
    from serving.demo import DemoConfig, load_router, run_demo
    from tier_router.cli import main as cli

    work = a.dir or Path(tempfile.mkdtemp(prefix="tier-router-features-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    data = work / "data.jsonl"
    _slice(a.data, data, a.train, a.test)
    bundle = work / "bundle"

    def run(argv: list[str]) -> Any:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = cli(argv)
        if rc != 0:
            raise SystemExit(f"{argv[0]} exited {rc}")
        return json.loads(out.getvalue()) if out.getvalue().strip() else None

    run(["train", "--outcomes", str(data), "--ladder", str(a.ladder), "--out", str(bundle),
         "--no-mlflow"])  # fmt: skip
    doc: dict[str, Any] = {"data": str(a.data), "train": a.train, "test": a.test,
                           "requests": a.requests}  # fmt: skip
    routers = {}
    for storage in ("store", "features"):
        log = work / f"{storage}.jsonl"
        log.unlink(missing_ok=True)
        cfg = DemoConfig(str(bundle), str(data), str(log), split="train", requests=a.requests,
                         seed=5, prompt_storage=storage)  # fmt: skip
        run_demo(cfg, load_router(str(bundle)), progress=io.StringIO())
        out = work / f"challenger-{storage}"
        res = run(["retrain", "--outcomes", str(data), "--log", str(log), "--ladder",
                   str(a.ladder), "--out", str(out), "--model", "", "--bootstrap", "0"])
        doc[storage] = {
            **_bytes(log),
            "feedback_rows": res["feedback"]["feedback_rows"],
            "challenger": res["challenger"]["metrics"],
        }
        routers[storage] = Router.load(out)
    prompts = [r.prompt for r in read_outcomes(data, "test")]
    p = {k: r.p_pass_batch(prompts) for k, r in routers.items()}
    diff = np.abs(p["store"] - p["features"])
    doc["max_abs_p_pass_difference"] = float(diff.max())
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
