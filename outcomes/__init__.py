"""Reader and writer for the outcomes file contract (JSONL, optionally gzipped).

Its own package, beside `router` rather than in it: the runtime never reads outcomes,
while training, labeling, feedback and the local Bedrock server all do. Pure standard
library and no import of the project, so each of them shares one parser and every
caller gets the same file/line/field error messages.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PASS_THRESHOLD = 0.5
# Judge metrics sometimes land just outside [0, 1] (a length-penalised overlap score of
# -0.03 in routerarena). Such scores are clipped, which keeps pass/fail as it was; a
# score beyond this margin means another scale (0-100, a log-probability) and is refused.
SCORE_CLIP_MARGIN = 0.5

log = logging.getLogger(__name__)


class OutcomesError(ValueError):
    """An outcomes file is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class ModelResult:
    score: float
    output_tokens: float | None = None
    output_chars: float | None = None
    input_tokens: float | None = None
    cost_usd: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.score >= PASS_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"score": self.score}
        for k in ("output_tokens", "output_chars", "input_tokens", "cost_usd"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class OutcomeRecord:
    id: str
    prompt: str
    results: dict[str, ModelResult]
    split: str | None = None
    task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "prompt": self.prompt}
        if self.task is not None:
            d["task"] = self.task
        if self.split is not None:
            d["split"] = self.split
        d.update(self.extra)
        d["results"] = {k: v.to_dict() for k, v in self.results.items()}
        return d


def _open_text(path: Path) -> IO[str]:
    raw = path.open("rb")
    magic = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")
    return io.TextIOWrapper(raw, encoding="utf-8")


_NUMERIC_OPTIONAL = ("output_tokens", "output_chars", "input_tokens", "cost_usd")


def _number(v: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise OutcomesError(f"{where}: expected a finite number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise OutcomesError(f"{where}: expected a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def _score(v: Any, where: str, clipped: list[str] | None) -> float:
    x = _number(v, where)
    if 0.0 <= x <= 1.0:
        return x
    if not -SCORE_CLIP_MARGIN <= x <= 1.0 + SCORE_CLIP_MARGIN:
        raise OutcomesError(
            f"{where}: expected a score in [0, 1], got {x!r} (another scale? divide by its "
            f"maximum; scores within {SCORE_CLIP_MARGIN} of the range are clipped)"
        )
    if clipped is not None:
        clipped.append(f"{where}={x!r}")
    return min(1.0, max(0.0, x))


def parse_record(
    obj: Any, where: str, clipped: list[str] | None = None, *, scores: bool = True
) -> OutcomeRecord:
    """`clipped` collects `where=value` for scores clipped into [0, 1]. With `scores=False`
    a result may lack its score (NaN): replaying recorded answers must not need them."""
    if not isinstance(obj, dict):
        raise OutcomesError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for k in ("id", "prompt"):
        if not isinstance(obj.get(k), str):
            raise OutcomesError(f"{where}: field {k!r} must be a string, got {obj.get(k)!r:.80}")
    results = obj.get("results")
    if not isinstance(results, dict):
        raise OutcomesError(f"{where}: field 'results' must be an object of model -> result")
    parsed: dict[str, ModelResult] = {}
    for model, r in results.items():
        rw = f"{where}: results[{model!r}]"
        if not isinstance(r, dict) or ("score" not in r and scores):
            raise OutcomesError(f"{rw}: expected an object with a 'score'")
        opt = {
            k: _number(r[k], f"{rw}.{k}", lo=0.0) for k in _NUMERIC_OPTIONAL if r.get(k) is not None
        }
        extra = {k: v for k, v in r.items() if k != "score" and k not in _NUMERIC_OPTIONAL}
        parsed[model] = ModelResult(
            score=_score(r["score"], f"{rw}.score", clipped) if "score" in r else math.nan,
            extra=extra,
            **opt,
        )
    for k in ("split", "task"):
        if obj.get(k) is not None and not isinstance(obj[k], str):
            raise OutcomesError(f"{where}: field {k!r} must be a string, got {obj[k]!r:.80}")
    extra = {k: v for k, v in obj.items() if k not in ("id", "prompt", "results", "split", "task")}
    return OutcomeRecord(
        id=obj["id"],
        prompt=obj["prompt"],
        results=parsed,
        split=obj.get("split"),
        task=obj.get("task"),
        extra=extra,
    )


def iter_json_lines(
    path: str | Path, error: type[ValueError], what: str
) -> Iterator[tuple[str, Any]]:
    """(where, object) per non-blank line of a JSONL(.gz) file; failures raise `error`
    with file:line, so every JSONL reader of the project reports the same way."""
    p = Path(path)
    try:
        fh = _open_text(p)
    except OSError as e:
        raise error(f"{p}: cannot open {what}: {e.strerror or e}") from None
    with fh:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{p}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise error(f"{where}: invalid JSON: {e.msg}") from None
                except RecursionError:
                    raise error(f"{where}: invalid JSON: nested too deeply") from None
                yield where, obj
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError, zlib.error) as e:
            raise error(f"{p}:{lineno + 1}: unreadable ({type(e).__name__}: {e})") from None


def iter_outcomes(
    path: str | Path, split: str | None = None, *, scores: bool = True
) -> Iterator[OutcomeRecord]:
    """Stream records; `split` keeps only that split. Errors say file:line: field.

    Scores slightly outside [0, 1] are clipped into it and reported in one warning.
    """
    seen: set[str] = set()
    clipped: list[str] = []
    for where, obj in iter_json_lines(path, OutcomesError, "outcomes file"):
        rec = parse_record(obj, where, clipped, scores=scores)
        if rec.id in seen:
            raise OutcomesError(f"{where}: duplicate id {rec.id!r}")
        seen.add(rec.id)
        if split is None or rec.split == split:
            yield rec
    if clipped:
        log.warning(
            "%s: %d score(s) outside [0, 1] clipped into it (pass/fail unchanged): %s",
            path,
            len(clipped),
            ", ".join(clipped[:3]) + (", ..." if len(clipped) > 3 else ""),
        )


def read_outcomes(
    path: str | Path, split: str | None = None, *, scores: bool = True
) -> list[OutcomeRecord]:
    return list(iter_outcomes(path, split, scores=scores))


def write_outcomes(path: str | Path, records: Iterable[OutcomeRecord]) -> int:
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    n = 0
    with opener(p, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n
