"""One bundle snapshot per request: a hot swap keeps the cascade, never mixes versions
within a request, and refuses a bundle that would turn the cascade off silently. Real
bundles (trained on real answers), real boto3 against the local Bedrock server."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from serving_support import client_for

from fake_bedrock import LocalBedrock, OutcomeIndex, recorded_output_tokens
from outcomes import read_outcomes
from router import BundleError, Router
from router.bundle import CASCADE_FILE, VERIFIER_FILE, VERIFIER_MODEL, VERIFIER_WEIGHTS, seal_bundle
from router.hot_swap import SwappableRouter
from serving.demo import DemoConfig, run_demo
from serving.outcome_log import JsonlSink, OutcomeLogger, read_log
from serving.outcome_record import VERDICT_KINDS, OutcomeLogRecord
from serving.tiered_client import TieredClient, TieredClientConfig
from tier_router.serving_cli import register

NEVER = 1.01


def _rebundle(src: Path, dst: Path, edit: Callable[[Path], None]) -> Path:
    """A copy of a real bundle with `edit` applied, sealed with a fresh manifest (a new
    router version), as a retrain writing another bundle would."""
    shutil.copytree(src, dst)
    edit(dst)
    seal_bundle(dst, "test", {"from": str(src)})
    return dst


def _edit_cascade(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        doc = json.loads((d / CASCADE_FILE).read_text("utf-8"))
        change(doc)
        (d / CASCADE_FILE).write_text(json.dumps(doc), encoding="utf-8")

    return edit


def _always_escalate(doc: dict[str, Any]) -> None:
    """Every answer below the top is rejected; the second opinion is never asked."""
    p = doc["policy"]
    for k in ("accept", "consult", "accept_second"):
        p[k] = [NEVER] * len(p[k])
    p["cost_weight"] = [0.0] * len(p["start"])  # no cost shift lowers the bar
    p["start"] = [0.0] * len(p["start"])  # always start on the cheapest tier
    p["start_lambda"] = -1.0


def _drop_cascade(d: Path) -> None:
    for name in (CASCADE_FILE, VERIFIER_FILE, VERIFIER_MODEL, VERIFIER_WEIGHTS):
        (d / name).unlink()


@pytest.fixture(scope="module")
def bundles(cascade_train, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("snap")
    a = cascade_train.bundle
    return {
        "a": a,
        "escalating": _rebundle(a, root / "esc", _edit_cascade(_always_escalate)),
        "plain": _rebundle(a, root / "plain", _drop_cascade),
        "no_points": _rebundle(a, root / "nop", _edit_cascade(lambda d: d.update(points=[]))),
    }


@pytest.fixture(scope="module")
def records(cascade_train, answers_slice):
    ladder = Router.load(cascade_train.bundle).ladder
    recs = read_outcomes(answers_slice, "test")
    return [
        r
        for r in recs
        if all(
            recorded_output_tokens(r.results[t.outcomes_key]) <= t.max_tokens
            for t in (*ladder.tiers, ladder.second_opinion)
        )
    ][:60]


def test_swap_keeps_the_cascade_and_never_mixes_versions(bundles, records, tmp_path) -> None:
    """4 threads serve through one SwappableRouter; a swap mid-run to a bundle whose cascade
    rejects everything below the top. Both versions run the cascade; each request's
    record is wholly one version's (its decision, its verdicts)."""
    sr = SwappableRouter.load(bundles["a"])
    ladder = sr.ladder
    a_version = sr.version
    log = tmp_path / "log.jsonl"
    logger = OutcomeLogger([JsonlSink(log)])
    errors: list[BaseException] = []
    half = threading.Barrier(5)
    with LocalBedrock(ladder, OutcomeIndex(records, ladder)) as server:
        client = TieredClient(sr, client_for(server.url), logger, TieredClientConfig())
        assert client.cascade is not None  # a swappable router runs the cascade too

        served = [0] * 4
        new_version = Router.load(bundles["escalating"]).version

        def worker(k: int) -> None:
            after_swap = 0  # requests the new bundle decided
            try:
                # 8 requests before the swap, then on until the new bundle served 8:
                # serving is faster than loading a bundle.
                for i in range(2_000):
                    if i == 8:
                        half.wait()
                    if after_swap >= 8:
                        break
                    rec = records[(k + 4 * i) % len(records)]
                    res = client.converse(rec.prompt, request_id=f"{k}-{i}")
                    after_swap += res.decision.router_version == new_version
                    served[k] += 1
            except BaseException as e:  # counted: the test requires none
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        half.wait()
        swapped = sr.swap(bundles["escalating"])
        for t in threads:
            t.join()
        logger.close()
    assert errors == []
    assert swapped.new_version == new_version
    assert client.cascade is not None and client.snapshot().version == new_version
    recs = [OutcomeLogRecord.from_dict(r) for r in read_log(log)]
    assert len(recs) == sum(served)  # every request logged once
    by_version = Counter(r.router_version for r in recs)
    assert set(by_version) == {a_version, swapped.new_version}
    top = ladder.tiers[-1].name
    accepted_below_top = Counter()
    for r in recs:
        assert r.cascade is not None, "the cascade ran on both sides of the swap"
        assert r.decision is not None and r.decision.p_pass
        judged = [a for a in r.attempts if a.role != "second_opinion"]
        for a in r.attempts:
            assert a.verdict is not None and a.verdict.kind in VERDICT_KINDS
        if r.router_version == swapped.new_version:
            # The new bundle's thresholds, all of them: starts at the bottom, rejects all
            # below the top, never consults.
            assert r.start_tier == ladder.tiers[0].name
            below = [a.verdict for a in judged if a.tier != top and a.verdict is not None]
            assert all(v.kind != "accepted" for v in below), (r.request_id, below)
            assert all(a.role != "second_opinion" for a in r.attempts)
        else:
            accepted_below_top[r.router_version] += any(
                a.tier != top and a.verdict is not None and a.verdict.kind == "accepted"
                for a in judged
            )
    assert accepted_below_top[a_version] > 0  # the old bundle's own policy did accept some


def test_swap_to_a_bundle_without_a_cascade_is_refused_unless_allowed(bundles) -> None:
    sr = SwappableRouter.load(bundles["a"])
    client = TieredClient(sr, None, None, TieredClientConfig())
    with pytest.raises(BundleError, match=r"no verifier and cascade policy.*allow_cascade_removal"):
        sr.swap(bundles["plain"])
    assert client.cascade is not None and sr.version == Router.load(bundles["a"]).version
    allowed = SwappableRouter.load(bundles["a"], allow_cascade_removal=True)
    plain_client = TieredClient(allowed, None, None, TieredClientConfig())
    allowed.swap(bundles["plain"])
    assert plain_client.cascade is None  # served as a plain ladder, and said so by the swap


def test_swap_to_a_bundle_without_the_clients_operating_point_is_refused(bundles) -> None:
    a = Router.load(bundles["a"])
    assert a.cascade is not None and a.cascade.points
    point = a.cascade.points[0].label
    sr = SwappableRouter(a)
    client = TieredClient(sr, None, None, TieredClientConfig(cascade_point=point))
    with pytest.raises(BundleError, match=f"cascade_point '{point}' is not in the bundle"):
        sr.swap(bundles["no_points"])
    assert client.cascade is not None and client.cascade.policy.label == point
    sr.swap(bundles["escalating"])  # has the point: accepted
    assert client.snapshot().version != a.version


def test_max_calls_bounds_every_call_and_an_unanswered_second_opinion_rejects(
    bundles, records, tmp_path
) -> None:
    """With the second opinion down, a consulted answer is rejected by the signal
    'second_opinion_unavailable' (not left accepted), and max_calls=2 stops at two calls."""
    capped = _rebundle(
        bundles["a"],
        tmp_path / "capped",
        _edit_cascade(lambda d: d["policy"].update(max_calls=2)),
    )
    router = Router.load(bundles["a"])
    ladder = router.ladder
    assert ladder.second_opinion is not None
    log = tmp_path / "log.jsonl"
    with LocalBedrock(ladder, OutcomeIndex(records, ladder)) as server:
        server.unavailable_models.add(ladder.second_opinion.model_id)
        logger = OutcomeLogger([JsonlSink(log)])
        free = TieredClient(router, client_for(server.url, 1), logger, TieredClientConfig())
        bounded = TieredClient(
            Router.load(capped), client_for(server.url, 1), logger, TieredClientConfig()
        )
        for rec in records:
            free.converse(rec.prompt, request_id=f"free-{rec.id}")
            bounded.converse(rec.prompt, request_id=f"cap-{rec.id}")
        logger.close()
    recs = [OutcomeLogRecord.from_dict(r) for r in read_log(log)]
    consulted = 0
    for r in recs:
        if r.request_id.startswith("cap-"):
            assert len(r.attempts) <= 2, [a.role for a in r.attempts]
        roles = [a.role for a in r.attempts]
        if "second_opinion" not in roles:
            continue
        consulted += 1
        k = roles.index("second_opinion")
        assert r.attempts[k].verdict is not None
        assert r.attempts[k].verdict.to_dict() == {"kind": "failed", "signal": "unavailable"}
        asked = r.attempts[k - 1]  # the answer the second opinion was asked about
        assert asked.verdict is not None
        if r.request_id.startswith("free-"):
            assert asked.outcome == "rejected"
            assert asked.verdict.to_dict() == {
                "kind": "rejected",
                "signal": "second_opinion_unavailable",
            }
            assert "second opinion unavailable" in (asked.reason or "")
        else:  # at the cap: returned as it is, and said so
            assert asked.verdict.to_dict() == {"kind": "accepted", "signal": "call_cap"}
            assert r.final_tier == asked.tier
    assert consulted > 0  # the slice asks the second opinion


def test_demo_swaps_bundles_under_load_and_counts_verdicts_per_version(
    bundles, answers_slice, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tier-router demo --swap-to B --swap-after N` on 4 threads with throttling and
    server errors: nothing fails, every request is logged once, and the cascade judges
    requests on both versions (verdicts counted per version)."""
    parser = argparse.ArgumentParser(prog="tier-router")
    register(parser.add_subparsers(dest="command", required=True))
    log = tmp_path / "demo.jsonl"
    argv = ["demo", "--bundle", str(bundles["a"]), "--outcomes", str(answers_slice)]
    argv += ["--requests", "80", "--throttle-rate", "0.2", "--error-rate", "0.05"]
    argv += ["--threads", "4", "--swap-to", str(bundles["escalating"]), "--swap-after", "40"]
    argv += ["--log", str(log), "--seed", "2"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["requests"] == 80 and s["failed"] == 0 and s["log_records"] == 80
    assert s["throttled"] > 0 and s["server_errors"] > 0
    assert s["swap"]["ok"] and s["swap"]["after_requests"] == 40
    by = s["by_version"]
    assert set(by) == {s["swap"]["from_version"], s["swap"]["to_version"]}
    assert sum(v["requests"] for v in by.values()) == 80
    for v in by.values():
        assert v["failed"] == 0
        assert v["cascade"] == v["requests"] > 0  # the cascade ran before and after
        assert v["verdicts"].get("accepted", 0) > 0
    # The new bundle rejects every answer below the top: its verdicts say so.
    assert by[s["swap"]["to_version"]]["verdicts"].get("rejected", 0) > 0
    ids = [r["request_id"] for r in read_log(log)]
    assert len(set(ids)) == 80  # one record per request, each under one version


def test_demo_swap_to_a_bundle_without_a_cascade_is_refused_and_reported(
    bundles, answers_slice, tmp_path
) -> None:
    cfg = DemoConfig(
        bundle=str(bundles["a"]),
        outcomes=str(answers_slice),
        log=str(tmp_path / "log.jsonl"),
        requests=12,
        threads=2,
        swap_to=str(bundles["plain"]),
        swap_after=6,
    )
    s = run_demo(cfg, Router.load(bundles["a"]), progress=io.StringIO())
    assert s["swap"]["ok"] is False and "allow_cascade_removal" in s["swap"]["error"]
    assert list(s["by_version"]) == [Router.load(bundles["a"]).version]
    assert s["failed"] == 0 and s["log_records"] == 12


def test_operating_points_have_descriptive_names_and_old_names_still_work(bundles) -> None:
    router = Router.load(bundles["a"])
    assert router.cascade is not None
    labels = [p.label for p in router.cascade.points]
    assert labels and all(
        lb.startswith(("tradeoff-", "min-quality-", "route-only-")) for lb in labels
    ), labels
    old = next(p for p in router.cascade.points if p.expected.get("alias"))
    client = TieredClient(
        router, None, None, TieredClientConfig(cascade_point=old.expected["alias"])
    )
    assert client.cascade is not None and client.cascade.policy.label == old.label
