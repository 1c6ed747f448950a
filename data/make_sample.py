"""Re-pack the shipped sample data from the public MMLU-Pro answers file.

Source: `mmlu_pro_answers.jsonl.gz` of the project's shared data, which re-packs
TIGER-AI-Lab/MMLU-Pro `eval_results` (Apache-2.0): per prompt, each model's 5-shot CoT
answer text and whether the eval scored it correct. This script writes

- `data/sample/mmlu_pro_answers_sample.jsonl.gz`: a deterministic, category-stratified
  slice (about 2,000 train + 500 test prompts; original ids, tasks and splits), keeping
  the results of the three ladder models and the second-opinion model only;
- `data/sample/prompts.jsonl`: a few dozen of the sample's train prompts, without
  results, as input for `tier-router label` (the local Bedrock server started from the
  sample replays their recorded answers, so labeling them runs offline).

Both carry a `reference` (the gold option letter) where it can be read off the data: the
letter that the answers scored correct commit to, when they agree. The source does not
record gold answers; prompts no kept model got right have no reference.

Deterministic: the same source gives byte-identical output (fixed order, gzip mtime 0).

    python data/make_sample.py --source ../shared/data/mmlu_pro_answers.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a clone without an install
    sys.path.insert(0, str(REPO))

from labeling.graders import choice_letter  # noqa: E402

KEEP_MODELS = (
    "Meta-Llama-3.1-8B-Instruct",
    "Meta-Llama-3.1-70B-Instruct",
    "gpt-4o-2024-05-13",
    "gemini-1.5-flash-002",
)
KEEP_FIELDS = ("score", "output_chars", "answer")
OUT_DIR = REPO / "data" / "sample"


def rank(pid: str) -> str:
    """A stable pseudo-random order that does not depend on the file's line order."""
    return hashlib.sha256(pid.encode("utf-8")).hexdigest()


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` over categories in proportion to their sizes (largest remainder)."""
    n = sum(sizes.values())
    exact = {k: total * v / n for k, v in sizes.items()}
    out = {k: min(sizes[k], int(x)) for k, x in exact.items()}
    by_remainder = sorted(sizes, key=lambda k: (-(exact[k] - int(exact[k])), k))
    for k in by_remainder[: total - sum(out.values())]:
        out[k] = min(sizes[k], out[k] + 1)
    return out


def gold_letter(rec: dict[str, Any]) -> str | None:
    """The letter every correct answer commits to, if there is one and they agree."""
    letters = {
        choice_letter(str(r.get("answer", "")))
        for m, r in rec["results"].items()
        if m in KEEP_MODELS and float(r["score"]) >= 0.5
    }
    letters.discard(None)
    return letters.pop() if len(letters) == 1 else None


def slim(rec: dict[str, Any]) -> dict[str, Any]:
    results = {
        m: {k: rec["results"][m][k] for k in KEEP_FIELDS if k in rec["results"][m]}
        for m in KEEP_MODELS
        if m in rec["results"]
    }
    out: dict[str, Any] = {
        k: rec[k] for k in ("id", "source", "task", "prompt", "split") if k in rec
    }
    ref = gold_letter(rec)
    if ref is not None:
        out["reference"] = ref
    out["results"] = results
    return out


def stratified(
    recs: list[dict[str, Any]], split: str, total: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(chosen, rest) of one split: per category the first prompts in `rank` order."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        if r.get("split") == split:
            by_task[r.get("task") or ""].append(r)
    for rows in by_task.values():
        rows.sort(key=lambda r: rank(r["id"]))
    quota = allocate({k: len(v) for k, v in by_task.items()}, total)
    chosen = [r for k in sorted(by_task) for r in by_task[k][: quota[k]]]
    rest = [r for k in sorted(by_task) for r in by_task[k][quota[k] :]]
    return chosen, rest


def write_gz(path: Path, lines: Iterable[str]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        for line in lines:
            gz.write(line.encode("utf-8"))
    path.write_bytes(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--source",
        type=Path,
        default=REPO.parent / "shared" / "data" / "mmlu_pro_answers.jsonl.gz",
        help="the public MMLU-Pro answers file",
    )
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where to write")
    ap.add_argument("--train", type=int, default=2000, help="train prompts to keep")
    ap.add_argument("--test", type=int, default=500, help="test prompts to keep")
    ap.add_argument("--prompts", type=int, default=40, help="prompts for prompts.jsonl")
    a = ap.parse_args(argv)
    if not a.source.is_file():
        ap.error(f"--source: no such file: {a.source}")
    with gzip.open(a.source, "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    train, _ = stratified(recs, "train", a.train)
    test, _ = stratified(recs, "test", a.test)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    sample = a.out_dir / "mmlu_pro_answers_sample.jsonl.gz"
    write_gz(sample, (json.dumps(slim(r), ensure_ascii=False) + "\n" for r in train + test))
    # Label input: sample train prompts with a known gold letter, spread over categories.
    pool = sorted(
        (r for r in train if gold_letter(r) is not None),
        key=lambda r: rank("prompts:" + r["id"]),
    )
    picked: list[dict[str, Any]] = []
    seen: dict[str, int] = defaultdict(int)
    per_task = max(1, -(-a.prompts // max(1, len({r["task"] for r in pool}))))
    for r in pool:
        if len(picked) < a.prompts and seen[r["task"]] < per_task:
            seen[r["task"]] += 1
            picked.append(r)
    prompts = a.out_dir / "prompts.jsonl"
    with prompts.open("w", encoding="utf-8") as f:
        for r in sorted(picked, key=lambda r: (r["task"], r["id"])):
            row = {"id": r["id"], "prompt": r["prompt"], "reference": gold_letter(r)}
            row.update(task=r["task"], split=r["split"])
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    refs = sum(1 for r in train + test if gold_letter(r) is not None)
    print(
        json.dumps(
            {
                "sample": str(sample),
                "train": len(train),
                "test": len(test),
                "with_reference": refs,
                "bytes": sample.stat().st_size,
                "prompts": str(prompts),
                "prompts_written": len(picked),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
