"""The routed batch run's state: one JSON document, on local disk or in S3, saved after
every step that changes it (routing, planning a round, creating and collecting a wave
of jobs).

It holds what a resumed run must not redo: each record's start tier and router P(pass),
the answers its calls got (text, stop reason, tokens, round), failures per target, and
every job with its idempotent client request token and ARN. A killed run reloads it
and re-attaches to its jobs instead of submitting them again; a job created but not yet
recorded is found again through its token (Bedrock returns the same job for it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KIND = "tier-router.batch-state/1"


class BatchStateError(RuntimeError):
    """The state belongs to another run or cannot be read or written."""


@dataclass
class Call:
    """A batch record's answer: text, stop reason and tokens, in which round."""

    text: str
    stop_reason: str
    input_tokens: int
    output_tokens: int
    round: int


@dataclass
class RecordState:
    start: int
    p_router: list[float]
    calls: dict[str, Call] = field(default_factory=dict)  # target (tier or second) -> answer
    fails: dict[str, int] = field(default_factory=dict)  # target -> failed tries
    last_error: dict[str, str] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)  # targets given up on after the retries


@dataclass
class JobState:
    round: int
    target: str  # a tier name or the second opinion's
    part: int
    name: str  # also the clientRequestToken
    rids: list[int]
    arn: str | None = None
    status: str = "Planned"
    collected: bool = False

    @property
    def job_id(self) -> str:
        return (self.arn or "").rsplit("/", 1)[-1]


@dataclass
class RunState:
    run_id: str
    records: list[RecordState]
    jobs: list[JobState] = field(default_factory=list)
    round: int = 0
    finished: bool = False

    def round_jobs(self, n: int) -> list[JobState]:
        return [j for j in self.jobs if j.round == n]

    def to_json(self) -> str:
        # Built by hand: dataclasses.asdict deep-copies, seconds for 100k records.
        records = [
            {
                "start": r.start,
                "p_router": r.p_router,
                "calls": {k: c.__dict__ for k, c in r.calls.items()},
                "fails": r.fails,
                "last_error": r.last_error,
                "dead": r.dead,
            }
            for r in self.records
        ]
        doc = {
            "kind": KIND,
            "run_id": self.run_id,
            "records": records,
            "jobs": [j.__dict__ for j in self.jobs],
            "round": self.round,
            "finished": self.finished,
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str) -> RunState:
        try:
            d = json.loads(text)
            if d.get("kind") != KIND:
                raise ValueError(f"kind is {d.get('kind')!r}, not {KIND!r}")
            records = [
                RecordState(
                    start=int(r["start"]),
                    p_router=[float(p) for p in r["p_router"]],
                    calls={k: Call(**c) for k, c in r["calls"].items()},
                    fails={k: int(v) for k, v in r["fails"].items()},
                    last_error=dict(r.get("last_error") or {}),
                    dead=list(r["dead"]),
                )
                for r in d["records"]
            ]
            jobs = [JobState(**j) for j in d["jobs"]]
            return cls(str(d["run_id"]), records, jobs, int(d["round"]), bool(d["finished"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BatchStateError(f"{where}: not a batch state file: {e}") from None


class StateStore:
    """Where the state lives: a local path, or `s3://bucket/key` through `s3`."""

    def __init__(self, location: str, s3: Any = None) -> None:
        self.location = location
        self.s3 = s3
        self._bucket = self._key = ""
        if location.startswith("s3://"):
            bucket, _, key = location[5:].partition("/")
            if not bucket or not key:
                raise BatchStateError(f"state {location!r}: expected s3://BUCKET/KEY")
            if s3 is None:
                raise BatchStateError(f"state {location!r}: an S3 state needs an S3 client")
            self._bucket, self._key = bucket, key

    def load(self) -> RunState | None:
        if self._bucket:
            try:
                body = self.s3.get_object(Bucket=self._bucket, Key=self._key)["Body"].read()
            except self.s3.exceptions.NoSuchKey:
                return None
            except Exception as e:
                raise BatchStateError(f"state {self.location}: cannot read: {e}") from e
            return RunState.from_json(body.decode("utf-8"), self.location)
        p = Path(self.location)
        if not p.exists():
            return None
        return RunState.from_json(p.read_text(encoding="utf-8"), self.location)

    def save(self, state: RunState) -> None:
        text = state.to_json()
        if self._bucket:
            try:
                self.s3.put_object(Bucket=self._bucket, Key=self._key, Body=text.encode("utf-8"))
            except Exception as e:
                raise BatchStateError(f"state {self.location}: cannot write: {e}") from e
            return
        p = Path(self.location)
        tmp = p.with_name(p.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
