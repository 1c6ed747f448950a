"""Read a training table (training/scale_table.py) into a fit, sampled to a row budget.

A month of logs makes a table larger than one machine's memory. The fit reads it in two
streamed passes over Parquet record batches and never holds more than the sample:

1. count the rows per stratum: the label pattern (per tier: pass, fail or unlabelled)
   crossed with whether the request was explored;
2. keep each row with its stratum's rate, decided by a hash of its request id and the seed
   (so a rerun keeps the same rows): the overall rate p = budget / rows, raised for a rare
   stratum to keep at least MIN_PER_STRATUM of its rows (all, when it has fewer). A row
   of a raised stratum has its weight multiplied by p / p_s, so the weighted sample has
   the table's proportions while the rare label patterns (an explored cheap tier's
   failures, say) keep enough rows to be learned from.

The sample then goes through the unchanged fit: the same out-of-fold model selection and
policy fit as `train`, on the table's own features (made by the bundle's featurizer, whose
digest every row carries and which must equal the one this fit exports).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from router.featurizer import Featurizer
from router.ladder import Ladder
from training.featurize import Features
from training.labels import LabelSet

if TYPE_CHECKING:
    from training.pipeline import Prepared, TrainConfig
    from training.retrain import MergeStats, RetrainConfig

MIN_PER_STRATUM = 200
_COUNT_COLUMNS = ["request_id", "scores", "explored"]


class TableError(ValueError):
    """A training table that cannot be fitted from; the message says why."""


@dataclass
class SampleReport:
    rows: int = 0
    sampled: int = 0
    dropped_eval_overlap: int = 0
    budget: int = 0
    rate: float = 1.0
    strata: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "sampled": self.sampled,
            "dropped_eval_overlap": self.dropped_eval_overlap,
            "budget": self.budget,
            "rate": self.rate,
            "strata": self.strata,
        }


def _dataset(location: str) -> Any:
    """A pyarrow dataset of the table's Parquet files: a file, a directory or s3://prefix/
    (S3 endpoint and credentials from the AWS environment, as every reader here)."""
    import pyarrow.dataset as pds

    if location.startswith("s3://"):
        from pyarrow import fs

        s3 = fs.S3FileSystem(
            endpoint_override=os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        )
        return pds.dataset(location[len("s3://") :].rstrip("/"), format="parquet", filesystem=s3)
    return pds.dataset(location, format="parquet")


def _batches(location: str, columns: list[str]) -> Iterator[Any]:
    try:
        ds = _dataset(location)
        missing = [c for c in columns if c not in ds.schema.names]
        if missing:
            raise TableError(f"--table {location}: not a training table (no columns {missing})")
        yield from ds.to_batches(columns=columns, batch_size=8192)
    except (OSError, ValueError) as e:
        if isinstance(e, TableError):
            raise
        raise TableError(f"--table {location}: cannot read Parquet: {e}") from None


# Rows as a fit reads them: `columns` -> batches of {column: values}. A table's Parquet
# files (`parquet_rows`) or rows made in memory from outcome logs (`memory_rows`).
RowBatches = Callable[[list[str]], Iterator[dict[str, list[Any]]]]
_OPTIONAL = ("chars",)  # tables written before the column: the prompt's length


def parquet_rows(location: str) -> RowBatches:
    def batches(columns: list[str]) -> Iterator[dict[str, list[Any]]]:
        want = [c for c in columns if c not in _OPTIONAL]
        has = set(_dataset(location).schema.names) if set(columns) - set(want) else set()
        want += [c for c in columns if c in _OPTIONAL and c in has]
        for b in _batches(location, want):
            d = b.to_pydict()
            n = b.num_rows
            yield {c: d[c] if c in d else [None] * n for c in columns}

    return batches


def memory_rows(cols: Mapping[str, list[Any]]) -> RowBatches:
    def batches(columns: list[str]) -> Iterator[dict[str, list[Any]]]:
        n = len(cols["request_id"])
        yield {c: list(cols[c]) if c in cols else [None] * n for c in columns}

    return batches


@dataclass(frozen=True)
class HeldOut:
    """The evaluation split's prompts, which no training row may be: a row with text is
    matched by its text, a row logged as router features (no text) by its length and
    features (equal within float32 rounding to the held-out prompt's, computed with the
    same featurizer). A reworded prompt is not caught; a reordering of the same words
    can be (a bag of tokens): that row is dropped too, the safe side."""

    texts: frozenset[str] = frozenset()
    by_chars: Mapping[int, tuple[tuple[np.ndarray, np.ndarray], ...]] = field(
        default_factory=dict
    )

    @classmethod
    def of(cls, prompts: Iterable[str], featurizer: Featurizer | None = None) -> HeldOut:
        texts = frozenset(prompts)
        if featurizer is None:
            return cls(texts)
        ordered = sorted(texts)
        emb, hand = featurizer.static_batch(ordered)
        by: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for t, e, h in zip(ordered, emb, hand, strict=True):
            by.setdefault(len(t), []).append((e, h))
        return cls(texts, {k: tuple(v) for k, v in by.items()})

    def has(self, prompt: str | None, chars: int | None, emb: Any, hand: Any) -> bool:
        if prompt is not None:
            return prompt in self.texts
        near = self.by_chars.get(chars) if chars is not None else None
        if not near:
            return False
        e, h = np.asarray(emb, dtype=np.float32), np.asarray(hand, dtype=np.float32)
        return any(
            np.allclose(e, e2, rtol=1e-5, atol=1e-6) and np.allclose(h, h2, rtol=1e-5, atol=1e-6)
            for e2, h2 in near
        )


def _stratum(scores: list[float], explored: bool) -> str:
    marks = "".join("-" if math.isnan(s) else ("P" if s >= 0.5 else "F") for s in scores)
    return f"{marks}{'/x' if explored else ''}"


def _unit(request_id: str, seed: int) -> float:
    h = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def sample_table(
    location: str | RowBatches,
    ladder: Ladder,
    digest: str,
    budget: int,
    seed: int = 0,
    exclude_prompts: frozenset[str] | HeldOut = frozenset(),
    name: str | None = None,
) -> tuple[LabelSet, Features, SampleReport]:
    """The table's rows (a stratified sample when it has more than `budget`) as the labels
    and features a fit takes; rows that are held-out prompts (`exclude_prompts`, by text or,
    for a row logged as features, by its features) are dropped. `location` is a table's
    location or a `RowBatches` (`name` then says what the rows are, for messages)."""
    where = name or f"--table {location}"
    rows_of = parquet_rows(location) if isinstance(location, str) else location
    held = exclude_prompts if isinstance(exclude_prompts, HeldOut) else HeldOut(exclude_prompts)
    counts: Counter[str] = Counter()
    for b in rows_of(_COUNT_COLUMNS):
        for sc, ex in zip(b["scores"], b["explored"], strict=True):
            if len(sc) != len(ladder):
                raise TableError(f"{where}: rows have {len(sc)} tiers, the ladder {len(ladder)}")
            counts[_stratum(sc, bool(ex))] += 1
    rep = SampleReport(rows=sum(counts.values()), budget=budget)
    if rep.rows == 0:
        raise TableError(f"{where}: the table has no rows")
    p = min(1.0, budget / rep.rows)
    rates = {k: min(1.0, max(p, MIN_PER_STRATUM / n)) for k, n in counts.items()}
    rep.rate = p
    cols = ["request_id", "prompt", "scores", "ipw", "output_tokens", "explored", "emb", "hand",
            "featurizer", "chars"]  # fmt: skip
    ids: list[str] = []
    prompts: list[str] = []
    chars: list[int] = []
    scores, ipw, out_tok, emb, hand = [], [], [], [], []
    kept: Counter[str] = Counter()
    for d in rows_of(cols):
        for i, rid in enumerate(d["request_id"]):
            if d["featurizer"][i] != digest:
                raise TableError(
                    f"{where}: row {rid!r} was featurized with another featurizer "
                    f"({d['featurizer'][i][:12]}, this fit exports {digest[:12]}): rebuild the "
                    "table with the bundle of this tier-router's static assets"
                )
            k = _stratum(d["scores"][i], bool(d["explored"][i]))
            if _unit(rid, seed) >= rates[k]:
                continue
            text = d["prompt"][i]
            n_chars = d["chars"][i] if d["chars"][i] is not None else len(text or "")
            if held.has(text, n_chars, d["emb"][i], d["hand"][i]):
                rep.dropped_eval_overlap += 1
                continue
            kept[k] += 1
            ids.append(f"table-{rid}")
            prompts.append(text if text is not None else "")  # features only: no text
            chars.append(int(n_chars))
            scores.append(d["scores"][i])
            w = p / rates[k]
            ipw.append([1.0 if math.isnan(x) else x * w for x in d["ipw"][i]])
            out_tok.append(d["output_tokens"][i])
            emb.append(d["emb"][i])
            hand.append(d["hand"][i])
    n, t = len(ids), len(ladder)
    rep.sampled = n
    rep.strata = {
        k: {"rows": counts[k], "rate": round(rates[k], 6), "kept": kept[k]} for k in sorted(counts)
    }
    labels = LabelSet(
        ids=ids,
        prompts=prompts,
        scores=np.array(scores, dtype=np.float64).reshape(n, t),
        aux_models=[],
        aux_scores=np.zeros((n, 0)),
        output_tokens=np.array(out_tok, dtype=np.float64).reshape(n, t),
        dropped=0,
        weights=np.array(ipw, dtype=np.float64).reshape(n, t),
        tasks=("",) * n,
        chars=np.array(chars, dtype=np.int64),
    )
    feats = Features(
        np.array(emb, dtype=np.float32).reshape(n, -1),
        np.array(hand, dtype=np.float32).reshape(n, -1),
        None,
    )
    return labels, feats, rep


def concat(a: tuple[LabelSet, Features], b: tuple[LabelSet, Features]) -> tuple[LabelSet, Features]:
    """Two (labels, features) sets as one; auxiliary models missing on a side are NaN."""
    (la, fa), (lb, fb) = a, b
    aux = sorted(set(la.aux_models) | set(lb.aux_models))

    def aux_of(ls: LabelSet) -> np.ndarray:
        out = np.full((len(ls), len(aux)), np.nan)
        for j, m in enumerate(ls.aux_models):
            out[:, aux.index(m)] = ls.aux_scores[:, j]
        return out

    def w(ls: LabelSet) -> np.ndarray:
        return ls.weights if ls.weights is not None else np.ones_like(ls.scores)

    labels = LabelSet(
        ids=la.ids + lb.ids,
        prompts=la.prompts + lb.prompts,
        scores=np.vstack([la.scores, lb.scores]),
        aux_models=aux,
        aux_scores=np.vstack([aux_of(la), aux_of(lb)]),
        output_tokens=np.vstack([la.output_tokens, lb.output_tokens]),
        dropped=la.dropped + lb.dropped,
        weights=np.vstack([w(la), w(lb)]),
        tasks=tuple(la.tasks) + tuple(lb.tasks),
        chars=np.concatenate([la.prompt_chars, lb.prompt_chars]),
    )
    feats = Features(np.vstack([fa.emb, fb.emb]), np.vstack([fa.hand, fb.hand]), None)
    return labels, feats


def table_training_data(cfg: RetrainConfig, train_cfg: TrainConfig) -> tuple[Prepared, MergeStats]:
    """`retrain --table`: the base file's train split (featurized here) and a sample of the
    table (its prompts in the base file's evaluation split dropped), for `train`."""
    assert cfg.table is not None
    table = cfg.table
    return rows_training_data(cfg, train_cfg, lambda _: table, f"--table {table}")


# What the featurizer of a retrain is called in messages: it is the one the challenger exports.
FIT_FEATURIZER = "this retrain's featurizer (this machine's static assets, the challenger's)"


def log_training_data(cfg: RetrainConfig, train_cfg: TrainConfig) -> tuple[Prepared, MergeStats]:
    """`retrain --log` over logs whose records carry the router's features instead of the
    prompt (prompt_storage=features): each labelled record becomes a table row in memory,
    by `tier-router table`'s steps (label, dedupe, featurize: a text with this fit's
    featurizer, logged features checked against its digest and used as they are), and
    the rows are fitted as `retrain --table` fits a table. Logs larger than memory: build
    a table (`tier-router table`) and `retrain --table` it."""
    from training.log_labels import Grades
    from training.scale_table import iter_table_rows

    def rows(featurizer: Featurizer) -> RowBatches:
        grades = Grades.load(cfg.grades) if cfg.grades else Grades()
        cols: dict[str, list[Any]] = {}
        for batch in iter_table_rows(
            cfg.feedback, Ladder.load(cfg.tiers), cfg.label_rule, grades, featurizer,
            featurizer.digest, FIT_FEATURIZER,
        ):  # fmt: skip
            for c, v in batch.items():
                cols.setdefault(c, []).extend(v)
        if not cols:
            raise ValueError(
                f"--log {[str(f) for f in cfg.feedback]}: no record has a label and a prompt "
                "(text or router features)"
            )
        return memory_rows(cols)

    return rows_training_data(cfg, train_cfg, rows, f"--log {', '.join(map(str, cfg.feedback))}")


def rows_training_data(
    cfg: RetrainConfig,
    train_cfg: TrainConfig,
    rows_of: Callable[[Featurizer], str | RowBatches],
    name: str,
) -> tuple[Prepared, MergeStats]:
    """The base file's train split (featurized here, its answers kept for the verifier)
    and a sample of the rows `rows_of(this fit's featurizer)` gives (a table's location,
    or log rows made in memory) without the base file's evaluation-split prompts, as one
    fit's labels and features."""
    from outcomes import iter_outcomes, read_outcomes
    from router.featurizer import FeaturizerConfig
    from training import assets
    from training.featurize import featurize
    from training.labels import build_labels
    from training.ladder_check import check_ladder_against
    from training.pipeline import Prepared, training_records
    from training.retrain import MergeStats

    ladder = Ladder.load(cfg.tiers)
    static = assets.static_assets()
    fcfg = FeaturizerConfig(kind="fast")
    featurizer = Featurizer(fcfg, static.tokenizer_json, static.table, None)
    digest = featurizer.digest  # the featurizer this fit exports
    held_out = HeldOut.of((r.prompt for r in iter_outcomes(cfg.base, cfg.eval_split)), featurizer)
    t_labels, t_feats, rep = sample_table(
        rows_of(featurizer), ladder, digest, cfg.table_rows, train_cfg.seed, held_out, name
    )
    every_split = read_outcomes(cfg.base)
    check_ladder_against(ladder, cfg.tiers, every_split, cfg.base)
    base_recs = training_records(every_split, train_cfg.max_train, train_cfg.seed)
    del every_split
    b_labels = build_labels(base_recs, ladder)
    b_feats = featurize(b_labels.prompts, featurizer)
    labels, feats = concat((b_labels, b_feats), (t_labels, t_feats))
    st = MergeStats(
        base_rows=len(b_labels),
        feedback_records=rep.rows,
        feedback_rows=rep.sampled,
        dropped_eval_overlap=rep.dropped_eval_overlap,
        explored_rows=sum(int(v["kept"]) for k, v in rep.strata.items() if k.endswith("/x")),
        conversion={"table": name, **rep.to_dict()},
    )
    if rep.sampled == 0:
        raise ValueError(f"{name}: no usable rows ({rep.to_dict()})")
    return Prepared(labels, feats, digest, tuple(base_recs)), st
