from pathlib import Path

import pytest

from router.ladder import Ladder, LadderError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_ladders_load_cheapest_first() -> None:
    shipped = sorted((REPO / "data" / "ladders").glob("*.toml"))
    assert len(shipped) == 6
    for p in shipped:
        lad = Ladder.load(p)
        assert len(lad) == (2 if p.stem in ("routellm", "routerarena") else 3), p.name
        prices = [t.price_out_per_mtok for t in lad.tiers]
        assert prices == sorted(prices)


def test_roundtrip_through_toml(tmp_path: Path) -> None:
    lad = Ladder.load(REPO / "data" / "ladders" / "mmlu_pro.toml")
    p = tmp_path / "l.toml"
    p.write_text(lad.to_toml())
    assert Ladder.load(p) == lad


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("", "[[tier]]"),
        ("[[tier]]\nname='a'\n", "missing field"),
        (
            "[[tier]]\nname='a'\nmodel_id='m'\noutcomes_key='k'\nprice_in_per_mtok=-1\n"
            "price_out_per_mtok=1\n",
            "price_in_per_mtok",
        ),
        (
            "[[tier]]\nname='a'\nmodel_id='m'\noutcomes_key='k'\nprice_in_per_mtok=1\n"
            "price_out_per_mtok=1\n",
            "at least 2 tiers",
        ),
        ("[[tier]\n", "not valid TOML"),
        (
            "[[tier]]\nname='a'\nmodel_id='m'\noutcomes_key='k'\nprice_in_per_mtok=1\n"
            "price_out_per_mtok=1\nmax_tokens='x'\n",
            "max_tokens",
        ),
    ],
)
def test_bad_ladders_name_the_problem(tmp_path: Path, body: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(LadderError, match=None) as e:
        Ladder.load(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_duplicate_names_and_unknown_fields(tmp_path: Path) -> None:
    tier = (
        "[[tier]]\nname='a'\nmodel_id='m'\noutcomes_key='k'\nprice_in_per_mtok=1\n"
        "price_out_per_mtok=1\n"
    )
    p = tmp_path / "dup.toml"
    p.write_text(tier + tier)
    with pytest.raises(LadderError, match="unique"):
        Ladder.load(p)
    p.write_text(tier + tier.replace("'a'", "'b'") + "colour='red'\n")
    with pytest.raises(LadderError, match="unknown field"):
        Ladder.load(p)
