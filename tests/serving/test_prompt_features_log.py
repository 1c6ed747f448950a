"""Privacy by default: the outcome log carries the router's own features of the prompt
(and an HMAC join key when keyed), never its text, unless the caller opts in to `store`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_support import client_for

from fake_bedrock import LocalBedrock, OutcomeIndex
from outcomes import read_outcomes
from router import Router
from router.decision import Decision
from router.featurizer import featurizer_digest
from router.hot_swap import SwappableRouter
from router.prompt_features import PromptFeatures
from serving.outcome_log import (
    PROMPT_KEY_ENV,
    JsonlSink,
    OutcomeLogger,
    PromptStorage,
    encode_record,
    prompt_field,
    read_log,
)
from serving.outcome_record import NotAnOutcomeRecord, OutcomeLogRecord
from serving.routing import FixedTierRouter
from serving.tiered_client import TieredClient, TieredClientConfig


@pytest.fixture(scope="module")
def router(trained_bundle: Path) -> Router:
    return Router.load(trained_bundle)


@pytest.fixture(scope="module")
def prompts(small_outcomes: Path) -> list[Any]:
    return read_outcomes(small_outcomes, "test")[:30]


def _serve(router: Any, prompts: list[Any], log: Path, **cfg: Any) -> list[dict[str, Any]]:
    with LocalBedrock(router.ladder, OutcomeIndex(prompts, router.ladder)) as server:
        logger = OutcomeLogger([JsonlSink(log)])
        client = TieredClient(router, client_for(server.url), logger, TieredClientConfig(**cfg))
        for r in prompts:
            client.converse(r.prompt, request_id=r.id)
        logger.close()
    return list(read_log(log))


def test_default_log_has_the_routers_features_and_no_text(
    router: Router, prompts: list[Any], trained_bundle: Path, tmp_path: Path
) -> None:
    from training.scale_table import featurizer_digest as table_digest

    records = _serve(router, prompts, tmp_path / "log.jsonl")
    raw = (tmp_path / "log.jsonl").read_bytes()
    digest = featurizer_digest(trained_bundle)
    assert router.featurizer.digest == digest == table_digest(trained_bundle)
    assert len(records) == len(prompts)
    for d, src in zip(records, prompts, strict=True):
        # No text: neither the prompt nor an answer, in any form the log holds.
        assert src.prompt.encode("utf-8") not in raw
        assert json.dumps(src.prompt, ensure_ascii=False)[1:-1].encode("utf-8")[:60] not in raw
        assert "text" not in d["prompt"] and "hmac" not in d["prompt"]
        for a in d["attempts"]:
            assert a["answer"] == {"storage": "features", "chars": a["answer"]["chars"]}
        rec = OutcomeLogRecord.from_dict(d)
        assert rec.prompt_storage == "features" and rec.prompt_text is None
        assert rec.prompt_chars == len(src.prompt)
        f = rec.prompt_features
        assert f is not None and f.digest == digest
        # Bit-exact: the features the decision was made from, as the router computes them.
        emb, stats = router.featurizer.embedding(src.prompt)
        hand = np.array(router.featurizer.hand(src.prompt, stats), dtype=np.float32)
        assert f.emb.dtype == np.float32 and f.emb.tobytes() == emb.tobytes()
        assert f.hand.tobytes() == hand.tobytes()
        # ... which are the training table's features of the same text.
        t_emb, t_hand = router.featurizer.static_batch([src.prompt])
        assert f.emb.tobytes() == t_emb[0].tobytes() and f.hand.tobytes() == t_hand[0].tobytes()
        # The decision is route()'s.
        assert d["decision"]["p_pass"] == pytest.approx(router.route(src.prompt).p_pass, abs=0)
        assert base64.b64decode(d["prompt"]["features"]["emb"]) == emb.astype("<f4").tobytes()


def test_route_with_features_is_route_plus_features(router: Router, prompts: list[Any]) -> None:
    swappable = SwappableRouter(router)
    for r in prompts[:10]:
        d, f = swappable.route_with_features(r.prompt)
        assert (d.tier, d.p_pass) == (router.route(r.prompt).tier, router.route(r.prompt).p_pass)
        assert f is not None
        g = router.prompt_features(r.prompt)
        assert g is not None and g.emb.tobytes() == f.emb.tobytes()
    assert router.features_note is None


def test_hmac_is_keyed_and_the_key_may_come_from_the_environment(
    router: Router, prompts: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    few = prompts[:3]
    a = _serve(router, few, tmp_path / "a.jsonl", prompt_hash_key=b"key-one")
    b = _serve(router, few, tmp_path / "b.jsonl", prompt_hash_key=b"key-two")
    monkeypatch.setenv(PROMPT_KEY_ENV, "key-one")
    c = _serve(router, few, tmp_path / "c.jsonl")
    for ra, rb, rc, src in zip(a, b, c, few, strict=True):
        want = hmac.new(b"key-one", src.prompt.encode("utf-8"), hashlib.sha256).hexdigest()
        assert ra["prompt"]["hmac"] == want == rc["prompt"]["hmac"]
        assert rb["prompt"]["hmac"] != want and len(rb["prompt"]["hmac"]) == 64
        assert ra["prompt"]["features"] == rb["prompt"]["features"]
    assert "key-one" not in repr(TieredClientConfig())  # the key never prints


def test_store_is_the_opt_in_for_text(router: Router, prompts: list[Any], tmp_path: Path) -> None:
    (d,) = _serve(router, prompts[:1], tmp_path / "s.jsonl", prompt_storage=PromptStorage.STORE)
    assert d["prompt"] == {"storage": "store", "text": prompts[0].prompt}
    assert all(isinstance(a["answer"]["text"], str) for a in d["attempts"])


class _BrokenRouter:
    def __init__(self, router: Router) -> None:
        self.ladder, self.version = router.ladder, "broken"

    def route(self, text: str) -> Decision:
        raise RuntimeError("bundle corrupt")

    def route_with_features(self, text: str) -> tuple[Decision, PromptFeatures | None]:
        raise RuntimeError("bundle corrupt")


def test_without_features_the_record_says_why_and_is_still_written(
    router: Router, prompts: list[Any], tmp_path: Path
) -> None:
    few = prompts[:2]
    fixed = _serve(FixedTierRouter(router.ladder, 1), few, tmp_path / "f.jsonl")
    broken = _serve(_BrokenRouter(router), few, tmp_path / "b.jsonl")
    assert len(fixed) == len(broken) == 2
    for d, why in [(fixed[0], "router_without_features"), (broken[0], "route_error")]:
        assert d["prompt"] == {"storage": "features", "chars": len(few[0].prompt), "reason": why}
        rec = OutcomeLogRecord.from_dict(d)
        assert rec.prompt_features is None and rec.prompt_features_reason == why
    assert broken[0]["route_error"].startswith("RuntimeError")


def _features_record(router: Router, text: str, **prompt: Any) -> dict[str, Any]:
    _, f = router.route_with_features(text)
    field = prompt_field(text, PromptStorage.FEATURES, b"", f)
    field["features"] = {**field["features"], **prompt}
    return {"request_id": "r", "attempts": [], "prompt": field}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"emb": "not base64!"}, "features.emb: not valid base64"),
        ({"emb": base64.b64encode(b"abc").decode()}, "not a whole number of float32"),
        ({"emb": ""}, "features.emb: empty"),
        ({"hand": 3}, "features.hand: expected a base64 string"),
        ({"featurizer": "abc"}, "features.featurizer: expected a sha256 hex digest"),
        ({"encoding": "f16"}, "features.encoding"),
        (
            {"emb": base64.b64encode(np.array([np.nan], "<f4").tobytes()).decode()},
            "NaN or infinite",
        ),
    ],
)
def test_a_malformed_features_field_is_not_an_outcome_record(
    router: Router, bad: dict[str, Any], message: str
) -> None:
    good = _features_record(router, "What is the capital of France?")
    assert OutcomeLogRecord.from_dict(good).prompt_features is not None
    with pytest.raises(NotAnOutcomeRecord, match=message):
        OutcomeLogRecord.from_dict(_features_record(router, "What is 2+2?", **bad))
    not_an_object = {**good, "prompt": {"storage": "features", "features": "x"}}
    with pytest.raises(NotAnOutcomeRecord, match="features: expected an object"):
        OutcomeLogRecord.from_dict(not_an_object)


def test_log_bytes_per_record(router: Router, prompts: list[Any], tmp_path: Path) -> None:
    """The features cost a fixed ~0.95 kB per record (128 float32 + 18 hand features,
    base64, and the digest), whatever the prompt's length; the text costs its length."""
    stored = _serve(router, prompts[:10], tmp_path / "s.jsonl", prompt_storage=PromptStorage.STORE)
    feats = _serve(router, prompts[:10], tmp_path / "f.jsonl")
    n_hand = len(feats[0]["prompt"]["features"]["hand"]) * 3 // 4  # bytes
    for d in feats:
        f = d["prompt"]["features"]
        assert len(f["emb"]) == 4 * -(-4 * router.featurizer.dims // 3)  # base64 of float32
        assert len(f["hand"]) * 3 // 4 == n_hand == 4 * 18
    size_f = [len(encode_record(d["prompt"])) for d in feats]
    size_s = [len(encode_record(d["prompt"])) for d in stored]
    assert max(size_f) - min(size_f) <= 8  # the char count's digits alone
    assert 900 < size_f[0] < 1000
    for f_size, s_size, src in zip(size_f, size_s, prompts[:10], strict=True):
        assert s_size >= len(src.prompt)  # the text, JSON-escaped
        if len(src.prompt) > f_size:
            assert f_size < s_size
