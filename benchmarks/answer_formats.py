"""The answer reader on real answers re-rendered into other formats, and its speed.

    python benchmarks/answer_formats.py [--data ../shared/data] [--write DIR] [--speed]

For every recorded answer of the visible answer files (mmlu_pro_answers, gsm8k_answers)
whose final answer the reader can read, the answer is re-rendered into each format of
training/answer_formats.py (its reasoning kept, the final answer restated), and read
again: the table gives, per file and format, the share read as the same canonical answer
(the floor is 99%). With --write DIR it also writes each file re-rendered as fenced JSON
with raw newlines (the hardest format) as an outcomes file, to train on and compare with
the original (`python ../shared/tools/check_cascade.py`). With --speed it times
`read_final` (single thread, median and p99 microseconds) by reply length: real replies
of 1-3k characters, 100k-character ones, and hostile inputs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from router.answer_features import prompt_options  # noqa: E402
from router.answer_reader import read_final  # noqa: E402
from training.answer_formats import FORMATS, Reread, render, reread_row  # noqa: E402

FILES = ("mmlu_pro_answers.jsonl.gz", "gsm8k_answers.jsonl.gz")


def rows(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def format_table(data: Path, write: Path | None) -> dict:
    out: dict = {}
    for name in FILES:
        counts = Reread()
        rendered: list[str] = []
        for r in rows(data / name):
            reread_row(r, counts, rewrite_as="json_fenced_raw" if write is not None else None)
            if write is not None:
                rendered.append(json.dumps(r) + "\n")
        if write is not None:
            write.mkdir(parents=True, exist_ok=True)
            with gzip.open(write / name.replace(".jsonl", "_json_raw.jsonl"), "wt") as f:
                f.writelines(rendered)
        out[name] = {
            "answers": counts.answers,
            "readable": counts.readable,
            **{fmt: round(counts.share(fmt), 4) for fmt in FORMATS},
        }
    return out


def _time(texts: list[tuple[str, str]], reps: int) -> tuple[float, float]:
    times = []
    for _ in range(reps):
        for text, opts in texts:
            t0 = time.perf_counter_ns()
            read_final(text, opts)
            times.append((time.perf_counter_ns() - t0) / 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def speed(data: Path) -> dict:
    real = []
    for r in rows(data / FILES[0]):
        opts = prompt_options(r["prompt"])
        for res in r["results"].values():
            text = res.get("answer")
            if isinstance(text, str) and 1000 <= len(text) <= 3000:
                real.append((text, opts))
        if len(real) >= 2000:
            break
    as_json = [(render(t, "C", "json_fenced_raw"), o) for t, o in real]
    long_text = "".join(t for t, _ in real)[:100_000]
    big = [(long_text + f"\nThe answer is {k}.", "") for k in range(20)]
    hostile = {
        "fence_brace_32k": "```{" * 8000,
        "quotes_100k": '"answer": "' * 9000,
        "brackets_100k": "[" * 100_000,
        "boxed_100k": "\\boxed{" * 14_000,
        "answer_words_100k": "answer is " * 10_000,
        "blank_lines_100k": "\n" * 100_000,
    }
    out = {
        "real_1_3k": _time(real, 3),
        "real_1_3k_as_fenced_json": _time(as_json, 3),
        "synthetic_100k": _time(big, 3),
    }
    for name, text in hostile.items():
        out[name] = _time([(text, ""), (text, "ABCD")], 3)
    return {k: {"p50_us": round(v[0], 1), "p99_us": round(v[1], 1)} for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--speed", action="store_true")
    a = ap.parse_args()
    result = {"formats": format_table(a.data, a.write)}
    if a.speed:
        result["speed"] = speed(a.data)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
