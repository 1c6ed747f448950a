"""The tier ladder: which Bedrock models the router chooses between, cheapest first."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_MAX_LADDER_BYTES = 64 * 1024  # a 20-tier ladder is ~5 KB
_MAX_DOTS_PER_LINE = 32  # tomllib is quadratic in dotted-key depth
# Bedrock Batch Inference bills about half the on-demand price; a tier without its own
# batch prices is billed at this share of its on-demand ones.
DEFAULT_BATCH_PRICE_FACTOR = 0.5


class LadderError(ValueError):
    """A tier ladder file or table is invalid; the message names the file and field."""


@dataclass(frozen=True)
class Tier:
    name: str
    model_id: str
    outcomes_key: str
    price_in_per_mtok: float
    price_out_per_mtok: float
    max_tokens: int = 1024
    temperature: float | None = None
    top_p: float | None = None
    # Bedrock `additionalModelRequestFields` sent with every call on this tier, e.g. an
    # extended-thinking budget. Bedrock bills reasoning tokens as output tokens, so the
    # tier's output price covers them; `thinking_budget` only says how many to expect.
    additional_request_fields: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # Bedrock Batch prices ($/Mtok); None: DEFAULT_BATCH_PRICE_FACTOR x the on-demand price.
    batch_price_in_per_mtok: float | None = None
    batch_price_out_per_mtok: float | None = None

    @property
    def thinking_budget(self) -> int:
        """Extended-thinking token budget set in `additional_request_fields` (0: none)."""
        thinking = self.additional_request_fields.get("thinking")
        if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens", 0)
            return budget if isinstance(budget, int) and not isinstance(budget, bool) else 0
        return 0

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        return (
            input_tokens * self.price_in_per_mtok + output_tokens * self.price_out_per_mtok
        ) / 1e6

    def batch_cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        """Dollars for a Bedrock Batch record of these token counts on this tier."""
        pin, pout = self.batch_prices
        return (input_tokens * pin + output_tokens * pout) / 1e6

    @property
    def batch_prices(self) -> tuple[float, float]:
        """($/Mtok in, out) at the batch price: the tier's own, or the default share."""
        pin = self.batch_price_in_per_mtok
        pout = self.batch_price_out_per_mtok
        return (
            self.price_in_per_mtok * DEFAULT_BATCH_PRICE_FACTOR if pin is None else pin,
            self.price_out_per_mtok * DEFAULT_BATCH_PRICE_FACTOR if pout is None else pout,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "model_id": self.model_id,
            "outcomes_key": self.outcomes_key,
            "price_in_per_mtok": self.price_in_per_mtok,
            "price_out_per_mtok": self.price_out_per_mtok,
            "max_tokens": self.max_tokens,
        }
        if self.temperature is not None:
            d["temperature"] = self.temperature
        if self.top_p is not None:
            d["top_p"] = self.top_p
        if self.additional_request_fields:
            d["additional_request_fields"] = _plain(self.additional_request_fields)
        if self.batch_price_in_per_mtok is not None:
            d["batch_price_in_per_mtok"] = self.batch_price_in_per_mtok
        if self.batch_price_out_per_mtok is not None:
            d["batch_price_out_per_mtok"] = self.batch_price_out_per_mtok
        return d


@dataclass(frozen=True)
class Ladder:
    """Tiers cheapest first, and optionally a cheap second-opinion model.

    The second opinion is never a routing target: the cascade calls it only to compare its
    final answer with a tier's, and pays for it.
    """

    tiers: tuple[Tier, ...]
    second_opinion: Tier | None = None
    # Other second opinions `train` may choose instead, by out-of-fold system figures
    # ([[second_opinion_candidate]] tables); a trained bundle's ladder names the one kept.
    second_opinion_candidates: tuple[Tier, ...] = ()

    def __post_init__(self) -> None:
        if len(self.tiers) < 2:
            raise LadderError(f"a ladder needs at least 2 tiers, got {len(self.tiers)}")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise LadderError(f"tier names must be unique, got {names}")
        if self.second_opinion is not None and self.second_opinion.name in names:
            raise LadderError(
                f"second_opinion name {self.second_opinion.name!r} is also a tier name"
            )
        seconds = [c.name for c in self.second_opinion_options]
        if len(set(seconds)) != len(seconds) or set(seconds) & set(names):
            raise LadderError(
                f"second opinion and candidate names must be unique and not tier names, "
                f"got {seconds}"
            )

    @property
    def second_opinion_options(self) -> list[Tier]:
        """The second opinion and its candidates, the configured one first."""
        first = [self.second_opinion] if self.second_opinion is not None else []
        return [*first, *self.second_opinion_candidates]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def __len__(self) -> int:
        return len(self.tiers)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise LadderError(f"unknown tier {name!r}; the ladder has {self.names}") from None

    def to_toml(self) -> str:
        out = []
        for t in self.tiers:
            out.append("[[tier]]")
            for k, v in t.to_dict().items():
                out.append(f"{k} = {_toml_value(v)}")
            out.append("")
        if self.second_opinion is not None:
            out.append("[second_opinion]")
            for k, v in self.second_opinion.to_dict().items():
                out.append(f"{k} = {_toml_value(v)}")
            out.append("")
        for c in self.second_opinion_candidates:
            out.append("[[second_opinion_candidate]]")
            for k, v in c.to_dict().items():
                out.append(f"{k} = {_toml_value(v)}")
            out.append("")
        return "\n".join(out)

    @classmethod
    def load(cls, path: str | Path) -> Ladder:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise LadderError(f"{p}: cannot read tier ladder: {e.strerror or e}") from None
        if len(raw) > _MAX_LADDER_BYTES:
            raise LadderError(
                f"{p}: {len(raw)} bytes is too large for a tier ladder (limit {_MAX_LADDER_BYTES})"
            )
        for lineno, line in enumerate(raw.splitlines(), 1):
            if line.count(b".") > _MAX_DOTS_PER_LINE:
                raise LadderError(f"{p}:{lineno}: keys nested too deeply for a tier ladder")
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except RecursionError:
            raise LadderError(f"{p}: not valid TOML: nested too deeply") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise LadderError(f"{p}: not valid TOML: {e}") from None
        return cls.from_dict(doc, source=str(p))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<ladder>") -> Ladder:
        if not isinstance(doc, dict) or not isinstance(doc.get("tier"), list):
            raise LadderError(f"{source}: expected a [[tier]] array of tables, cheapest first")
        unknown = sorted(set(doc) - {"tier", "second_opinion", "second_opinion_candidate"})
        if unknown:
            raise LadderError(
                f"{source}: unknown table(s) {unknown}; a ladder has [[tier]] and "
                "optionally [second_opinion] and [[second_opinion_candidate]]"
            )
        tiers = tuple(_parse_tier(t, source, i) for i, t in enumerate(doc["tier"]))
        second = doc.get("second_opinion")
        if second is not None and not isinstance(second, dict):
            raise LadderError(f"{source}: [second_opinion] must be a table, not an array")
        second_tier = None if second is None else _parse_tier(second, source, "second_opinion")
        cands = doc.get("second_opinion_candidate", [])
        if not isinstance(cands, list):
            raise LadderError(
                f"{source}: second_opinion_candidate must be an array of tables "
                "([[second_opinion_candidate]])"
            )
        candidates = tuple(
            _parse_tier(c, source, f"second_opinion_candidate {i}") for i, c in enumerate(cands)
        )
        try:
            return cls(tiers, second_tier, candidates)
        except LadderError as e:
            raise LadderError(f"{source}: {e}") from None


_REQUIRED = ("name", "model_id", "outcomes_key", "price_in_per_mtok", "price_out_per_mtok")
_BATCH_PRICES = ("batch_price_in_per_mtok", "batch_price_out_per_mtok")
_KNOWN = {
    *_REQUIRED,
    *_BATCH_PRICES,
    "max_tokens",
    "temperature",
    "top_p",
    "additional_request_fields",
}
_MAX_FIELD_DEPTH = 8


def _parse_tier(t: Any, source: str, i: int | str) -> Tier:
    where = f"{source}: tier[{i}]" if isinstance(i, int) else f"{source}: [{i}]"
    if not isinstance(t, dict):
        raise LadderError(f"{where}: expected a table")
    missing = [k for k in _REQUIRED if k not in t]
    if missing:
        raise LadderError(f"{where}: missing field(s) {missing}")
    unknown = sorted(set(t) - _KNOWN)
    if unknown:
        raise LadderError(f"{where}: unknown field(s) {unknown}; known: {sorted(_KNOWN)}")
    for k in ("name", "model_id", "outcomes_key"):
        if not isinstance(t[k], str) or not t[k].strip():
            raise LadderError(f"{where}.{k}: expected a non-empty string, got {t[k]!r}")
    prices: dict[str, Any] = {}
    for k in ("price_in_per_mtok", "price_out_per_mtok", *_BATCH_PRICES):
        if k not in t:
            continue  # only the batch prices are optional (checked above)
        v = t[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise LadderError(f"{where}.{k}: expected a finite number >= 0, got {v!r}")
        prices[k] = float(v)
    max_tokens = t.get("max_tokens", 1024)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise LadderError(f"{where}.max_tokens: expected a positive integer, got {max_tokens!r}")
    opt: dict[str, float | None] = {}
    for k, lo, hi in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        v = t.get(k)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi
        ):
            raise LadderError(f"{where}.{k}: expected a number in [{lo}, {hi}], got {v!r}")
        opt[k] = None if v is None else float(v)
    extra = t.get("additional_request_fields", {})
    if not isinstance(extra, dict):
        raise LadderError(
            f"{where}.additional_request_fields: expected a table, got {type(extra).__name__}"
        )
    _check_fields(extra, f"{where}.additional_request_fields", 0)
    thinking = extra.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or not 1024 <= budget < max_tokens
    ):
        raise LadderError(
            f"{where}.additional_request_fields.thinking.budget_tokens: expected an integer "
            f"in [1024, max_tokens={max_tokens}) (Bedrock counts thinking in maxTokens), "
            f"got {budget!r}"
        )
    return Tier(
        name=t["name"],
        model_id=t["model_id"],
        outcomes_key=t["outcomes_key"],
        max_tokens=max_tokens,
        temperature=opt["temperature"],
        top_p=opt["top_p"],
        additional_request_fields=extra,
        **prices,
    )


def _check_fields(v: Any, where: str, depth: int) -> None:
    """JSON-able TOML values only (Bedrock takes a JSON document), not too deep."""
    if depth > _MAX_FIELD_DEPTH:
        raise LadderError(f"{where}: nested more than {_MAX_FIELD_DEPTH} levels")
    if isinstance(v, dict):
        for k, x in v.items():
            _check_fields(x, f"{where}.{k}", depth + 1)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_fields(x, f"{where}[{i}]", depth + 1)
    elif isinstance(v, float) and not math.isfinite(v):
        raise LadderError(f"{where}: expected a finite number, got {v!r}")
    elif not isinstance(v, str | int | float | bool):
        raise LadderError(f"{where}: {type(v).__name__} values cannot be sent to Bedrock")


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        # A JSON string is a TOML basic string, once DEL (legal in JSON) is escaped too.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Mapping):  # an inline table; keys quoted, so any key round-trips
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
