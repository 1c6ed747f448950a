from pathlib import Path

import pytest

from router.ladder import Ladder, LadderError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_ladders_load_cheapest_first() -> None:
    shipped = sorted((REPO / "data" / "ladders").glob("*.toml"))
    assert len(shipped) == 7
    sizes = {"routellm": 2, "routerarena": 2, "mmlu_pro_thinking": 4}
    for p in shipped:
        lad = Ladder.load(p)
        assert len(lad) == sizes.get(p.stem, 3), p.name
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


def test_thinking_tier_round_trips_and_is_validated(tmp_path: Path) -> None:
    lad = Ladder.load(REPO / "data" / "ladders" / "mmlu_pro_thinking.toml")
    assert lad.names == ["haiku", "sonnet", "sonnet-thinking", "opus"]
    thinking = lad.tiers[2]
    assert thinking.additional_request_fields == {
        "thinking": {"type": "enabled", "budget_tokens": 4096}
    }
    assert thinking.thinking_budget == 4096 and lad.tiers[1].thinking_budget == 0
    assert "additional_request_fields" not in lad.tiers[1].to_dict()
    p = tmp_path / "t.toml"
    p.write_text(lad.to_toml(), encoding="utf-8")
    assert Ladder.load(p) == lad
    hash(thinking)  # still usable as a dict key

    def with_fields(fields: str, max_tokens: int = 4096) -> Path:
        body = lad.to_toml().split("[[tier]]")
        body[1] += f"additional_request_fields = {fields}\n"
        body[1] = body[1].replace("max_tokens = 1024", f"max_tokens = {max_tokens}")
        p.write_text("[[tier]]".join(body), encoding="utf-8")
        return p

    with pytest.raises(LadderError, match=r"additional_request_fields: expected a table"):
        Ladder.load(with_fields("[1, 2]"))
    with pytest.raises(LadderError, match=r"budget_tokens: expected an integer in \[1024, max"):
        Ladder.load(with_fields('{thinking = {type = "enabled", budget_tokens = 8192}}'))
    odd = Ladder.load(with_fields('{"a.b" = "x\\u007f\\"y", list = [1, 2.5, true]}'))
    p.write_text(odd.to_toml(), encoding="utf-8")
    assert Ladder.load(p) == odd
