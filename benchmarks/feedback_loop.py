"""The feedback loop at full size: serve -> log -> grade -> retrain, three rounds, then plot.

    python benchmarks/feedback_loop.py --answers ../shared/data/mmlu_pro_answers.jsonl.gz \\
        --ladder data/ladders/mmlu_pro_answers.toml --work /tmp/loop [--rounds 3]

Writes WORK/loop.json (per round: the system's cost and quality on the test split with the
paired 95% interval of its change from round 0, the verifier's AUC, what was served and
retrained on) and WORK/loop.png (cost and quality by round); prints the JSON.
The loop itself is training/feedback_loop.py; tests/integration/test_feedback_loop.py runs
it on a slice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.feedback_loop import LoopConfig, plot_loop, run_loop  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=Path, required=True)
    ap.add_argument("--ladder", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed-share", type=float, default=0.3)
    ap.add_argument("--cascade-explore-rate", type=float, default=0.1)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--max-test", type=int, default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = LoopConfig(
        answers=a.answers, ladder=a.ladder, work=a.work, rounds=a.rounds,
        seed_share=a.seed_share, cascade_explore_rate=a.cascade_explore_rate,
        max_train=a.max_train, max_test=a.max_test, folds=a.folds, seed=a.seed,
        threads=a.threads,
    )  # fmt: skip
    report = run_loop(cfg)
    report["plot"] = str(plot_loop(report, a.work / "loop.png"))
    (a.work / "loop.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
