"""Every shipped ladder prices each Bedrock model id as the one price table says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

LADDERS = Path(__file__).resolve().parents[2] / "data" / "ladders"
# A cross-region inference profile is the model id behind a geography prefix.
_PROFILE = re.compile(r"^(?:us|eu|apac|us-gov|ca|jp|au)\.")


def price_table() -> dict[str, tuple[float, float]]:
    """`model id -> (input, output) $/Mtok` from the rows of PRICES.md's table."""
    rows: dict[str, tuple[float, float]] = {}
    for line in (LADDERS / "PRICES.md").read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\|[^|]+\|\s*`([^`]+)`\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            assert m[1] not in rows, f"PRICES.md lists {m[1]} twice"
            rows[m[1]] = (float(m[2]), float(m[3]))
    return rows


def priced_entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [*doc.get("tier", []), *([doc["second_opinion"]] if "second_opinion" in doc else [])]


def test_price_table_is_dated_and_names_the_models_the_ladders_use() -> None:
    text = (LADDERS / "PRICES.md").read_text(encoding="utf-8")
    assert re.search(r"recorded on \*\*\d{4}-\d{2}-\d{2}\*\*", text)
    table = price_table()
    assert table["anthropic.claude-3-haiku-20240307-v1:0"] == (0.25, 1.25)
    assert table["anthropic.claude-3-5-haiku-20241022-v1:0"] == (0.80, 4.00)
    assert table["amazon.nova-micro-v1:0"] == (0.035, 0.14)


@pytest.mark.parametrize("path", sorted(LADDERS.glob("*.toml")), ids=lambda p: p.stem)
def test_ladder_ids_and_prices_agree_with_the_table(path: Path) -> None:
    table = price_table()
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    entries = priced_entries(doc)
    assert len(entries) >= 2
    for t in entries:
        model = _PROFILE.sub("", t["model_id"])
        assert model in table, f"{path.name}: {t['name']} uses {t['model_id']}, not in PRICES.md"
        got = (float(t["price_in_per_mtok"]), float(t["price_out_per_mtok"]))
        assert got == table[model], f"{path.name}: {t['name']} ({model}) priced {got}"


def test_the_check_catches_a_3_5_haiku_id_at_3_haiku_prices() -> None:
    """The mismatch this table was made for: Claude 3.5 Haiku's id at Claude 3 Haiku's rates."""
    table = price_table()
    model = _PROFILE.sub("", "us.anthropic.claude-3-5-haiku-20241022-v1:0")
    assert table[model] != (0.25, 1.25)
