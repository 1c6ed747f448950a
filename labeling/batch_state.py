"""The batch run's on-disk state (sqlite beside the output): prompts, jobs, results.

It keeps memory flat in the number of prompts (nothing is held in Python lists) and
makes every step restartable: prompts are ingested once, a job is recorded as soon as
it is created, results are upserted, and the outcomes file is rebuilt from here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeling.prompts import PromptItem
from outcomes import ModelResult
from serving.batch_jobs import record_id, rid_of

__all__ = ["BatchState", "JobRow", "StateError", "record_id", "rid_of"]


class StateError(RuntimeError):
    """The state file belongs to another run or is unusable."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (
    rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, chars INTEGER NOT NULL, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    tier TEXT PRIMARY KEY, name TEXT NOT NULL, arn TEXT NOT NULL, records INTEGER NOT NULL,
    estimate_usd REAL NOT NULL, status TEXT NOT NULL, collected INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS results (
    rid INTEGER NOT NULL, tier TEXT NOT NULL, passed INTEGER NOT NULL, cost_usd REAL NOT NULL,
    grader_cost_usd REAL NOT NULL, result TEXT NOT NULL, PRIMARY KEY (rid, tier));
CREATE TABLE IF NOT EXISTS errors (
    rid INTEGER NOT NULL, tier TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (rid, tier));
"""


@dataclass(frozen=True)
class JobRow:
    tier: str
    name: str
    arn: str
    records: int
    estimate_usd: float
    status: str
    collected: bool

    @property
    def job_id(self) -> str:
        return self.arn.rsplit("/", 1)[-1]


def _item_json(item: PromptItem) -> str:
    return json.dumps(
        {
            "id": item.id,
            "messages": item.messages,
            "reference": item.reference,
            "task": item.task,
            "split": item.split,
            "where": item.where,
        },
        ensure_ascii=False,
    )


def _item(raw: str) -> PromptItem:
    d = json.loads(raw)
    return PromptItem(
        id=d["id"],
        messages=tuple(d["messages"]),
        reference=d["reference"],
        task=d["task"],
        split=d["split"],
        where=d["where"],
    )


class BatchState:
    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        stored = self.meta("run_id")
        if stored is None:
            self.set_meta("run_id", run_id)
        elif stored != run_id:
            self.db.close()
            raise StateError(
                f"{path} belongs to another run ({stored}; this one is {run_id}: the prompts "
                "file or the ladder changed). Use another --out, or delete the state file."
            )
        self.run_id = run_id

    def close(self) -> None:
        self.db.close()

    # ---- meta
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ---- prompts
    def add_prompts(self, items: Iterator[PromptItem], chunk: int = 5000) -> int:
        """Insert in chunks, one transaction each; a duplicate id raises ValueError."""
        n = 0
        self.db.execute("BEGIN")
        try:
            for item in items:
                try:
                    self.db.execute(
                        "INSERT INTO prompts (id, chars, item) VALUES (?, ?, ?)",
                        (item.id, len(item.text), _item_json(item)),
                    )
                except sqlite3.IntegrityError:
                    raise ValueError(
                        f"{item.where}: field 'id': duplicate id {item.id!r}"
                    ) from None
                n += 1
                if n % chunk == 0:
                    self.db.execute("COMMIT")
                    self.db.execute("BEGIN")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self.db.execute("DELETE FROM prompts")
            raise
        return n

    def prompt_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM prompts").fetchone()[0])

    def item(self, rid: int) -> PromptItem | None:
        row = self.db.execute("SELECT item FROM prompts WHERE rid = ?", (rid,)).fetchone()
        return None if row is None else _item(row[0])

    def pending_for(
        self, tier_keys_before: list[str], strategy: str
    ) -> Iterator[tuple[int, int, PromptItem]]:
        """(rid, chars, item) of prompts the next tier must run on: all of them, or for
        a cascade those whose every cheaper tier has a result and none passed."""
        args: tuple[Any, ...] = ()
        if strategy == "all" or not tier_keys_before:
            sql = "SELECT rid, chars, item FROM prompts ORDER BY rid"
        else:
            marks = ",".join("?" * len(tier_keys_before))
            sql = (
                "SELECT p.rid, p.chars, p.item FROM prompts p JOIN results r ON r.rid = p.rid "
                f"AND r.tier IN ({marks}) GROUP BY p.rid HAVING COUNT(*) = ? AND MAX(r.passed) = 0 "
                "ORDER BY p.rid"
            )
            args = (*tier_keys_before, len(tier_keys_before))
        for rid, chars, raw in self.db.execute(sql, args):
            yield int(rid), int(chars), _item(raw)

    # ---- jobs
    def job(self, tier: str) -> JobRow | None:
        row = self.db.execute("SELECT * FROM jobs WHERE tier = ?", (tier,)).fetchone()
        if row is None:
            return None
        tier, name, arn, records, estimate, status, collected = row
        return JobRow(tier, name, arn, int(records), float(estimate), status, bool(collected))

    def save_job(self, row: JobRow) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.tier,
                row.name,
                row.arn,
                row.records,
                row.estimate_usd,
                row.status,
                int(row.collected),
            ),
        )

    def committed_usd(self) -> float:
        """Spent on collected results plus the estimate of created, uncollected jobs."""
        spent = self.db.execute(
            "SELECT COALESCE(SUM(cost_usd + grader_cost_usd), 0) FROM results"
        ).fetchone()[0]
        pending = self.db.execute(
            "SELECT COALESCE(SUM(estimate_usd), 0) FROM jobs WHERE collected = 0"
        ).fetchone()[0]
        return float(spent) + float(pending)

    # ---- results
    def begin(self) -> None:
        self.db.execute("BEGIN")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def put_result(self, rid: int, tier: str, result: ModelResult) -> None:
        grader_cost = float(result.extra.get("grader_cost_usd", 0.0))
        self.db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
            (
                rid,
                tier,
                int(result.passed),
                result.cost_usd or 0.0,
                grader_cost,
                json.dumps(result.to_dict()),
            ),
        )
        self.db.execute("DELETE FROM errors WHERE rid = ? AND tier = ?", (rid, tier))

    def put_error(self, rid: int, tier: str, message: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO errors VALUES (?, ?, ?)", (rid, tier, message))

    def totals(self) -> dict[str, Any]:
        cost, gcost, n = self.db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(grader_cost_usd), 0), COUNT(*) "
            "FROM results"
        ).fetchone()
        errors = self.db.execute("SELECT COUNT(*) FROM errors").fetchone()[0]
        labeled = self.db.execute("SELECT COUNT(DISTINCT rid) FROM results").fetchone()[0]
        return {
            "model_usd": float(cost),
            "grader_usd": float(gcost),
            "results": int(n),
            "errors": int(errors),
            "labeled": int(labeled),
        }

    def first_error(self) -> str | None:
        row = self.db.execute("SELECT tier, message FROM errors LIMIT 1").fetchone()
        return None if row is None else f"{row[0]}: {row[1]}"

    def labeled_rows(self) -> Iterator[tuple[PromptItem, dict[str, ModelResult]]]:
        """Prompts with at least one result, in file order, each with its results."""
        from outcomes import parse_record

        cur = self.db.execute(
            "SELECT p.rid, p.item, r.tier, r.result FROM prompts p JOIN results r ON r.rid = p.rid "
            "ORDER BY p.rid"
        )
        current: int | None = None
        item: PromptItem | None = None
        results: dict[str, Any] = {}
        for rid, raw_item, tier, raw_result in cur:
            if rid != current:
                if item is not None:
                    yield item, _parse_results(results, item, parse_record)
                current, item, results = rid, _item(raw_item), {}
            results[tier] = json.loads(raw_result)
        if item is not None:
            yield item, _parse_results(results, item, parse_record)


def _parse_results(results: dict[str, Any], item: PromptItem, parse: Any) -> dict[str, ModelResult]:
    rec = parse({"id": item.id, "prompt": "-", "results": results}, f"state:{item.id}")
    return dict(rec.results)
