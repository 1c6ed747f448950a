"""Decision.from_fields: the route() hot path's constructor makes the same frozen value."""

from __future__ import annotations

import dataclasses

import pytest

from router.decision import Decision

FIELDS = {
    "tier": "sonnet",
    "tier_index": 1,
    "model_id": "m",
    "max_tokens": 512,
    "p_pass": {"haiku": 0.2, "sonnet": 0.7},
    "router_version": "v1",
    "reason": "policy",
}


def test_from_fields_equals_the_constructor_and_stays_frozen() -> None:
    d = Decision.from_fields(dict(FIELDS))
    assert d == Decision(**FIELDS)
    assert dataclasses.asdict(d) == FIELDS
    assert d.to_dict()["p_pass"] == FIELDS["p_pass"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.tier = "opus"  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields",
    [{k: v for k, v in FIELDS.items() if k != "reason"}, {**FIELDS, "extra": 1}],
)
def test_from_fields_refuses_a_missing_or_unknown_field(fields: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="exactly"):
        Decision.from_fields(fields)
