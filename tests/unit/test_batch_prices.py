"""The ladder's batch prices: optional per tier, half the on-demand price by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.ladder import DEFAULT_BATCH_PRICE_FACTOR, Ladder, LadderError

BASE = """
[[tier]]
name = "small"
model_id = "m-small"
outcomes_key = "s"
price_in_per_mtok = 1.0
price_out_per_mtok = 5.0
{extra}

[[tier]]
name = "large"
model_id = "m-large"
outcomes_key = "l"
price_in_per_mtok = 10.0
price_out_per_mtok = 50.0
"""


def _ladder(tmp_path: Path, extra: str = "") -> Ladder:
    p = tmp_path / "l.toml"
    p.write_text(BASE.format(extra=extra))
    return Ladder.load(p)


def test_default_batch_price_is_half_the_on_demand_price(tmp_path: Path) -> None:
    small, large = _ladder(tmp_path).tiers
    assert DEFAULT_BATCH_PRICE_FACTOR == 0.5
    assert small.batch_prices == (0.5, 2.5) and large.batch_prices == (5.0, 25.0)
    assert small.batch_cost_usd(1e6, 1e6) == pytest.approx(small.cost_usd(1e6, 1e6) / 2)
    assert "batch_price_in_per_mtok" not in small.to_dict()  # absent stays absent


def test_batch_prices_override_and_round_trip(tmp_path: Path) -> None:
    ladder = _ladder(tmp_path, "batch_price_in_per_mtok = 0.4\nbatch_price_out_per_mtok = 2")
    small = ladder.tiers[0]
    assert small.batch_prices == (0.4, 2.0)
    assert small.batch_cost_usd(1e6, 2e6) == pytest.approx(4.4)
    again = tmp_path / "again.toml"
    again.write_text(ladder.to_toml())
    assert Ladder.load(again) == ladder


def test_one_batch_price_alone_defaults_the_other(tmp_path: Path) -> None:
    small = _ladder(tmp_path, "batch_price_out_per_mtok = 1.0").tiers[0]
    assert small.batch_prices == (0.5, 1.0)


@pytest.mark.parametrize("value", ["-1", '"cheap"', "nan", "true"])
def test_bad_batch_price_names_the_field(tmp_path: Path, value: str) -> None:
    with pytest.raises(LadderError, match=r"tier\[0\]\.batch_price_in_per_mtok"):
        _ladder(tmp_path, f"batch_price_in_per_mtok = {value}")
