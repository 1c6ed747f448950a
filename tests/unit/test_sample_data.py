"""The shipped sample (data/sample) is what the README's first command and label example
need, fits the repository, and is exactly what data/make_sample.py makes of the public file."""

from __future__ import annotations

import hashlib
import tomllib
from collections import Counter
from pathlib import Path

from labeling.prompts import iter_prompts
from outcomes import read_outcomes
from router.ladder import Ladder

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
OUTCOMES = SAMPLE / "mmlu_pro_answers_sample.jsonl.gz"
PROMPTS = SAMPLE / "prompts.jsonl"
LADDER = REPO / "data" / "ladders" / "mmlu_pro_answers.toml"


def test_sample_outcomes_fit_the_ladder_and_the_repository() -> None:
    assert OUTCOMES.stat().st_size < 3_000_000
    recs = read_outcomes(OUTCOMES)
    assert Counter(r.split for r in recs) == {"train": 2000, "test": 500}
    assert len({r.task for r in recs}) == 14  # every MMLU-Pro category, in both splits
    assert len({r.task for r in recs if r.split == "test"}) == 14
    doc = tomllib.loads(LADDER.read_text(encoding="utf-8"))
    keys = {t.outcomes_key for t in Ladder.load(LADDER).tiers}
    keys.add(doc["second_opinion"]["outcomes_key"])
    for r in recs:
        assert set(r.results) == keys, r.id
        assert all(isinstance(m.extra.get("answer"), str) for m in r.results.values()), r.id
    passed = {k: sum(r.results[k].passed for r in recs) / len(recs) for k in keys}
    assert passed["Meta-Llama-3.1-8B-Instruct"] < passed["gpt-4o-2024-05-13"]


def test_sample_prompts_are_sample_records_with_their_gold_letters() -> None:
    by_id = {r.id: r for r in read_outcomes(OUTCOMES)}
    items = list(iter_prompts(PROMPTS))
    assert 24 <= len(items) <= 60 and len({i.id for i in items}) == len(items)
    for item in items:
        rec = by_id[item.id]
        assert item.text == rec.prompt and item.task == rec.task and item.split == rec.split
        assert item.reference == rec.extra["reference"]
        assert item.reference in "ABCDEFGHIJ"


def test_make_sample_reproduces_the_shipped_files(tmp_path: Path, shared_data: Path) -> None:
    import runpy

    source = shared_data / "mmlu_pro_answers.jsonl.gz"
    make = runpy.run_path(str(REPO / "data" / "make_sample.py"))
    assert make["main"](["--source", str(source), "--out-dir", str(tmp_path)]) == 0
    for name in (OUTCOMES.name, PROMPTS.name):
        got = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert got == hashlib.sha256((SAMPLE / name).read_bytes()).hexdigest(), name
