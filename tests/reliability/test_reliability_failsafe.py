"""Fail-safe serving through real boto3 and the local Bedrock server: a bundle that
cannot be loaded, or a router that raises while scoring, sends the request to the
configured default tier and says why, instead of failing the request."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fake_bedrock import LocalBedrock, Reply
from router import Router
from router.ladder import Ladder, Tier
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log
from serving.tiered_client import TieredClient, TieredClientConfig

OK = Reply("A fine answer.")


def _client(
    bundle: Path, ladder: Ladder, server: LocalBedrock, make_client: Callable[..., Any], log: Path
) -> TieredClient:
    server.responder = lambda m, b: OK
    return TieredClient.from_bundle(
        bundle,
        ladder,
        make_client(server.url),
        OutcomeLogger([JsonlSink(log)]),
        TieredClientConfig(failsafe_tier="sonnet"),
    )


def _corrupt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    with (dst / "model.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 16)
    return dst


@pytest.mark.parametrize("damage", ["missing", "corrupt", "not-a-bundle", "other-ladder"])
def test_unloadable_bundle_routes_to_default_tier_and_logs_why(
    damage: str,
    trained_bundle: Path,
    rb_ladder: Ladder,
    server: LocalBedrock,
    make_client: Callable[..., Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ladder = rb_ladder
    if damage == "missing":
        bundle = tmp_path / "nowhere"
    elif damage == "corrupt":
        bundle = _corrupt(trained_bundle, tmp_path / "b")
    elif damage == "not-a-bundle":
        bundle = tmp_path / "b.tar.gz"
        bundle.write_bytes(b"\x1f\x8b garbage")
    else:
        bundle = trained_bundle
        ladder = Ladder((*rb_ladder.tiers[:2], Tier("big", rb_ladder.tiers[2].model_id, "x", 1, 1)))
    with caplog.at_level(logging.ERROR, logger="serving.routing"):
        client = _client(bundle, ladder, server, make_client, tmp_path / "log.jsonl")
    assert str(bundle) in caplog.text and "routing every request to sonnet" in caplog.text
    res = [client.converse(f"question {i}?") for i in range(3)]
    assert all(r.ok and r.tier == "sonnet" for r in res)
    recs = list(read_log(tmp_path / "log.jsonl"))
    assert len(recs) == 3
    for rec in recs:
        assert rec["router_version"] == "failsafe"
        assert rec["decision"]["reason"].startswith("bundle_unavailable: ")
        assert rec["attempts"][0]["tier"] == "sonnet" and rec["ok"]


def test_good_bundle_is_used(
    trained_bundle: Path,
    rb_ladder: Ladder,
    server: LocalBedrock,
    make_client: Callable[..., Any],
    tmp_path: Path,
) -> None:
    client = _client(trained_bundle, rb_ladder, server, make_client, tmp_path / "log.jsonl")
    res = client.converse("What is 2 + 2?")
    assert res.decision.router_version == Router.load(trained_bundle).version
    assert res.decision.reason.startswith("policy: ")


def test_router_raising_while_scoring_uses_default_tier(
    trained_bundle: Path,
    rb_ladder: Ladder,
    server: LocalBedrock,
    make_client: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _client(trained_bundle, rb_ladder, server, make_client, tmp_path / "log.jsonl")
    router = client.router
    assert isinstance(router, Router)

    def broken_run(*a: Any, **k: Any) -> Any:
        raise RuntimeError("onnxruntime: simulated scoring failure")

    monkeypatch.setattr(router, "_p_one", broken_run)
    res = client.converse("What is 2 + 2?")
    assert res.ok and res.tier == "sonnet"
    rec = next(read_log(tmp_path / "log.jsonl"))
    assert "simulated scoring failure" in rec["route_error"]
    assert rec["router_version"] == "failsafe"
