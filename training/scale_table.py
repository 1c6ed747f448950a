"""Outcome logs -> the training table (Parquet), in-process or on Ray Data: one transformation.

The steps, in the same functions for both paths:
1. read: each log source (file or S3 object, serving/log_source.py) as raw lines, each
   with its position (source rank in listing order, line number);
2. parse + validate + label (`label_lines`): a line that is not an outcome record, or whose
   record has no label, gives no row; the labels are the serving rules
   (`observed_labels`, the one seam to training/log_labels.py) under the label rule, each with its
   inverse-propensity weight;
3. dedupe by request id: the first position wins (what the single-machine reader keeps);
4. featurize (`featurize_rows`) with the bundle's own featurizer (its static table and
   tokenizer), so the table's features are the ones routing computes. A record logged
   with prompt_storage=features has no text: its row takes the features the router
   logged (the same static embedding and hand features, bit for bit), after checking
   they were made by this featurizer (`featurizer` digest; another is refused, naming
   both). Its `prompt` is null and `chars` its length;
5. order by position and write Parquet.

In-process (`build_table`) runs 1-5 in one process over a stream. On Ray
(`build_table_ray`), sources are Ray Data rows, steps 1-2 and 4 are `map_batches` (the
featurizer loads once per actor), step 3 is a `groupby(request_id)` and step 5 a `sort`
then `write_parquet`, to local disk or S3. The Parquet rows of the two paths are equal
(tests/integration/test_scale_table.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcomes import OutcomeRecord
from router.featurizer import Featurizer, FeaturizerConfig
from router.featurizer import assets_digest as assets_digest  # the digest lives in router/
from router.featurizer import featurizer_digest as featurizer_digest
from router.ladder import Ladder
from serving.log_source import Source, expand, is_s3, iter_source_lines, split_s3
from serving.outcome_record import NotAnOutcomeRecord, OutcomeLogRecord
from serving.seen_ids import SeenIds
from training.labels import output_tokens_of
from training.log_labels import LABEL_RULES, Grades, observed

TABLE_FORMAT = "tier-router.table/1"
# Columns, in order. scores/ipw/output_tokens hold one value per ladder tier (NaN: no label).
COLUMNS = (
    "request_id", "rank", "line", "time", "router_version", "explored", "prompt",
    "scores", "ipw", "output_tokens", "emb", "hand", "featurizer", "format", "chars",
)  # fmt: skip
# Columns of step 2 (labelled, not featurized yet): `emb`, `hand` and `featurizer` hold
# the features a record logged (prompt_storage=features), null for a record with text.
_LABEL_COLUMNS = (*COLUMNS[:10], "chars", "emb", "hand", "featurizer")


class FeaturizerMismatch(ValueError):
    """Logged prompt features made by another featurizer than the one featurizing here."""


@dataclass(frozen=True)
class TableSpec:
    """What every worker needs: the ladder, the bundle whose featurizer makes the features,
    and the label rule. Plain data, so Ray ships it to workers."""

    ladder_toml: str
    bundle: str
    label_rule: str = "first-attempt"
    grades: tuple[str, ...] = ()  # graded feedback files, joined by request id

    def __post_init__(self) -> None:
        if self.label_rule not in LABEL_RULES:
            raise ValueError(f"label rule must be one of {LABEL_RULES}, got {self.label_rule!r}")

    @classmethod
    def of(
        cls,
        ladder: Path,
        bundle: Path,
        label_rule: str = "first-attempt",
        grades: tuple[str | Path, ...] = (),
    ) -> TableSpec:
        if not (bundle / "featurizer.json").is_file():
            raise ValueError(f"--bundle: {bundle} is not a bundle (no featurizer.json)")
        text = ladder.read_text(encoding="utf-8")
        return cls(text, str(bundle), label_rule, tuple(str(g) for g in grades))

    def graded(self) -> Grades:
        """The graded feedback (read once per process)."""
        return _grades(self.grades)

    def ladder(self) -> Ladder:
        import tomllib

        return Ladder.from_dict(tomllib.loads(self.ladder_toml), "<table spec ladder>")

    def featurizer(self) -> tuple[Featurizer, str]:
        """The bundle's featurizer and a digest naming its assets (stored in every row)."""
        b = Path(self.bundle)
        cfg = FeaturizerConfig.from_json((b / "featurizer.json").read_text(encoding="utf-8"))
        if cfg.kind != "fast":
            raise ValueError(f"{b}: the table holds fast (static + hand) features; the bundle's "
                             f"featurizer is {cfg.kind!r}")  # fmt: skip
        f = Featurizer.from_bundle(cfg, b)
        return f, f.digest


@functools.lru_cache(maxsize=4)
def _grades(files: tuple[str, ...]) -> Grades:
    return Grades.load(files) if files else Grades()


def observed_labels(
    rec: OutcomeLogRecord, ladder: Ladder, rule: str, grades: Grades | None = None
) -> OutcomeRecord | None:
    """THE seam to the labelling rules (training/log_labels.py, with the retrain label
    rule's propensity weights). Both paths call only this, so a change of the rules is a
    change there and nowhere in this module."""
    return observed(rec, ladder, rule, grades or Grades())


def label_lines(
    lines: Iterable[tuple[int, int, bytes]], ladder: Ladder, rule: str, grades: Grades | None = None
) -> dict[str, list[Any]]:
    """(source rank, line number, raw line) -> label columns of the labelled records. A
    record without text brings its logged features; one with neither (a features record
    whose router could not give them, a hashed or dropped prompt) gives no row."""
    import json

    cols: dict[str, list[Any]] = {c: [] for c in _LABEL_COLUMNS}
    keys = [t.outcomes_key for t in ladder.tiers]
    for rank, lineno, raw in lines:
        try:
            obj = json.loads(raw)
            rec = OutcomeLogRecord.from_dict(obj)
        except (ValueError, RecursionError, NotAnOutcomeRecord):
            continue
        text = rec.prompt_text
        feats = rec.prompt_features if text is None else None
        if text is None and feats is None:
            continue
        out = observed_labels(rec, ladder, rule, grades)
        if out is None:
            continue
        cols["request_id"].append(rec.request_id)
        cols["rank"].append(rank)
        cols["line"].append(lineno)
        cols["time"].append(rec.time)
        cols["router_version"].append(rec.router_version)
        cols["explored"].append(rec.explored)
        cols["prompt"].append(text)
        cols["scores"].append([out.results[k].score if k in out.results else math.nan
                               for k in keys])  # fmt: skip
        cols["ipw"].append([float(out.results[k].extra.get("ipw", 1.0)) if k in out.results
                            else math.nan for k in keys])  # fmt: skip
        cols["output_tokens"].append([output_tokens_of(out, k) for k in keys])
        cols["chars"].append(rec.prompt_chars)
        cols["emb"].append(None if feats is None else feats.emb.tolist())
        cols["hand"].append(None if feats is None else feats.hand.tolist())
        cols["featurizer"].append(None if feats is None else feats.digest)
    return cols


def featurize_rows(
    cols: Mapping[str, Any],
    featurizer: Featurizer,
    digest: str,
    featurized_by: str = "the table bundle's featurizer",
) -> dict[str, list[Any]]:
    """Label columns + the features of each prompt: its text featurized by `featurizer`
    (the bundle's static featurizer), or, for a row logged without text, the features the
    router logged, which must be `digest`'s (FeaturizerMismatch names both, and what to
    do; `featurized_by` says whose featurizer `digest` is)."""
    n = len(cols["request_id"])
    out = {c: list(cols[c]) for c in (*COLUMNS[:10], "chars")}
    prompts = list(cols["prompt"])
    logged = list(cols["featurizer"])
    emb: list[Any] = list(cols["emb"])
    hand: list[Any] = list(cols["hand"])
    with_text = [i for i in range(n) if prompts[i] is not None]
    e, h = featurizer.static_batch([prompts[i] for i in with_text])
    for j, i in enumerate(with_text):
        emb[i], hand[i] = e[j].tolist(), h[j].tolist()
    for i in range(n):
        if prompts[i] is None:
            check_logged_features(
                cols["request_id"][i], cols["router_version"][i], logged[i], digest,
                featurized_by, len(emb[i]), featurizer.dims,
            )  # fmt: skip
    out["emb"], out["hand"] = emb, hand
    out["featurizer"] = [digest] * n
    out["format"] = [TABLE_FORMAT] * n
    return {c: out[c] for c in COLUMNS}


def check_logged_features(
    request_id: str,
    router_version: str | None,
    logged: str,
    digest: str,
    featurized_by: str,
    dims: int,
    want_dims: int,
) -> None:
    """A logged-features row may join rows featurized by `digest` only if made by it."""
    if logged != digest:
        raise FeaturizerMismatch(
            f"record {request_id!r} (router {router_version}) carries prompt features made "
            f"by featurizer {logged}, but {featurized_by} is {digest}: features "
            "of two featurizers cannot share a fit. Featurize with the featurizer that "
            "served these requests (`tier-router table --bundle` the bundle that logged them, "
            "then `retrain --table`), or log the text (prompt_storage=store) to refeaturize"
        )
    if dims != want_dims:  # the same digest with another width: a damaged line
        raise FeaturizerMismatch(
            f"record {request_id!r}: logged embedding has {dims} values, featurizer "
            f"{digest[:12]} makes {want_dims}"
        )


def _numbered(rank: int, name: str, s3: Any | None = None) -> Iterator[tuple[int, int, bytes]]:
    """(rank, line number, bytes) of one source's non-blank lines (damage ends it early)."""
    if is_s3(name):
        bucket, key = split_s3(name)
        source = Source(name, bucket=bucket, key=key)
    else:
        source = Source(name, path=Path(name))
    for i, item in enumerate(iter_source_lines(source, s3)):
        if not isinstance(item, str) and item.data.strip():
            yield rank, i, item.data


def list_sources(logs: Iterable[str | Path], s3: Any | None = None) -> list[str]:
    """Every source under `logs` in read order (files as given, S3 keys in key order)."""
    return [src.name for src in expand(list(logs), s3)]


def iter_table_rows(
    logs: Iterable[str | Path],
    ladder: Ladder,
    rule: str,
    grades: Grades,
    featurizer: Featurizer,
    digest: str,
    featurized_by: str = "the table bundle's featurizer",
    s3: Any | None = None,
    batch_rows: int = 2048,
) -> Iterator[dict[str, list[Any]]]:
    """Steps 1-4 in this process, streamed: batches of table rows (columns -> values), in
    log order, each request id once."""
    seen = SeenIds()

    def rows_of(buf: list[tuple[int, int, bytes]]) -> dict[str, list[Any]] | None:
        cols = label_lines(buf, ladder, rule, grades)
        keep = [i for i, rid in enumerate(cols["request_id"]) if seen.add(rid)]
        if not keep:
            return None
        cols = {c: [v[i] for i in keep] for c, v in cols.items()}
        return featurize_rows(cols, featurizer, digest, featurized_by)

    buf: list[tuple[int, int, bytes]] = []
    for rank, name in enumerate(list_sources(logs, s3)):
        for item in _numbered(rank, name, s3):
            buf.append(item)
            if len(buf) >= batch_rows and (got := rows_of(buf)) is not None:
                yield got
            if len(buf) >= batch_rows:
                buf = []
    if buf and (got := rows_of(buf)) is not None:
        yield got


def build_table(
    logs: Iterable[str | Path],
    spec: TableSpec,
    out: Path,
    s3: Any | None = None,
    batch_rows: int = 2048,
) -> int:
    """In-process: stream the logs, write the table to `out` (one Parquet file); rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    featurizer, digest = spec.featurizer()
    writer: pq.ParquetWriter | None = None
    rows = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    by = f"the featurizer of bundle {spec.bundle}"
    for cols in iter_table_rows(
        logs, spec.ladder(), spec.label_rule, spec.graded(), featurizer, digest, by, s3, batch_rows
    ):
        table = pa.table(cols, schema=table_schema())
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
        rows += len(cols["request_id"])
    if writer is None:
        pq.write_table(table_schema().empty_table(), out)
    else:
        writer.close()
    return rows


def table_schema() -> Any:
    import pyarrow as pa

    f64 = pa.list_(pa.float64())
    f32 = pa.list_(pa.float32())
    return pa.schema([
        ("request_id", pa.string()), ("rank", pa.int64()), ("line", pa.int64()),
        ("time", pa.string()), ("router_version", pa.string()), ("explored", pa.bool_()),
        ("prompt", pa.string()), ("scores", f64), ("ipw", f64), ("output_tokens", f64),
        ("emb", f32), ("hand", f32), ("featurizer", pa.string()), ("format", pa.string()),
        ("chars", pa.int64()),
    ])  # fmt: skip


# -- Ray Data ------------------------------------------------------------------------------


def _read_and_label(batch: dict[str, np.ndarray], spec: TableSpec) -> Iterator[dict[str, Any]]:
    """Ray map_batches (tasks): source rows -> label rows, streamed from each source."""
    ladder = spec.ladder()
    for rank, name in zip(batch["rank"], batch["source"], strict=True):
        buf: list[tuple[int, int, bytes]] = []
        for item in _numbered(int(rank), str(name)):
            buf.append(item)
            if len(buf) >= 2048:
                yield _arrow_ready(label_lines(buf, ladder, spec.label_rule, spec.graded()))
                buf = []
        yield _arrow_ready(label_lines(buf, ladder, spec.label_rule, spec.graded()))


class _Featurize:
    """Ray map_batches (actors): label rows -> table rows; the featurizer loads once."""

    def __init__(self, spec: TableSpec) -> None:
        self.featurizer, self.digest = spec.featurizer()
        self.by = f"the featurizer of bundle {spec.bundle}"

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        cols = {c: batch.column(c).to_pylist() for c in _LABEL_COLUMNS}
        rows = featurize_rows(cols, self.featurizer, self.digest, self.by)
        return pa.table(rows, schema=table_schema())


def _arrow_ready(cols: dict[str, list[Any]]) -> Any:
    import pyarrow as pa

    schema = pa.schema([f for f in table_schema() if f.name in _LABEL_COLUMNS])
    return pa.table(cols, schema=schema)


def _first_position(group: Any) -> Any:
    """Ray map_groups: of one request id's rows, the first read (lowest rank, then line)."""
    import pyarrow.compute as pc

    order = pc.sort_indices(group, sort_keys=[("rank", "ascending"), ("line", "ascending")])
    return group.take(order[:1])


def build_table_ray(
    logs: Iterable[str | Path], spec: TableSpec, out: str, featurizers: int = 1
) -> int:
    """On Ray Data (the cluster `ray.init()` connects to): write the table under `out`
    (a directory or s3:// prefix of Parquet files); returns the rows. Reading and labelling
    run as tasks, one source each; featurizing runs on `featurizers` actors (each holds
    the bundle's static table once; give one per core you mean to spend on it)."""
    import ray.data
    from ray.data.context import DataContext, ShuffleStrategy

    # The sort-based shuffle runs as plain tasks: the hash shuffle's aggregator actors would
    # compete with the featurizer actors for the CPUs of a small cluster (and deadlock on 2).
    DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    sources = list_sources(logs)
    parts = max(1, min(len(sources), 64))
    ds = ray.data.from_items(
        [{"rank": i, "source": s} for i, s in enumerate(sources)],
        override_num_blocks=max(1, min(len(sources), 200)),
    )
    labelled = ds.map_batches(
        _read_and_label,  # type: ignore[arg-type]  # a generator with a keyword argument
        fn_kwargs={"spec": spec},
        batch_size=1,
        batch_format="numpy",
    )
    deduped = labelled.groupby("request_id", num_partitions=parts).map_groups(
        _first_position, batch_format="pyarrow"
    )
    table = deduped.map_batches(
        _Featurize, fn_constructor_args=(spec,), batch_size=1024, concurrency=featurizers,
        batch_format="pyarrow",
    ).sort(["rank", "line"])  # fmt: skip
    table = table.materialize()  # computed once: Ray spills to disk past its object store
    table.write_parquet(out)
    return int(table.count())
