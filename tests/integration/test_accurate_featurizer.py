"""The accurate featurizer: MiniLM through ONNX Runtime inside the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from realdata import train_quick

from outcomes import read_outcomes
from router import Router
from training.featurize import featurize


@pytest.fixture(scope="module")
def accurate(tmp_path_factory: pytest.TempPathFactory, small_outcomes: Path, small_ladder: Path):
    out = tmp_path_factory.mktemp("acc") / "bundle"
    return train_quick(small_outcomes, small_ladder, out, featurizer="accurate", max_train=300)


def test_encoder_matches_sentence_transformers(accurate) -> None:
    """int8 ONNX MiniLM stays close to the float sentence-transformers embedding."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from training.assets import minilm_path

    r = Router.load(accurate.bundle)
    texts = ["What is the capital of France?", "Write a haiku about routers."]
    ours = r._dense(texts)
    st = SentenceTransformer(str(minilm_path()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    cos = (ours * st).sum(axis=1)
    assert (cos > 0.95).all(), cos


def test_accurate_bundle_parity_and_routing(accurate, small_outcomes: Path) -> None:
    from training.assets import encoder_assets

    r = Router.load(accurate.bundle)
    assert "encoder.onnx" in r.manifest.files
    prompts = [x.prompt for x in read_outcomes(small_outcomes, "test")][:60]
    feats = featurize(prompts, r.featurizer, encoder_assets().model)
    expected = accurate.model.predict_proba(feats)
    assert np.abs(r.p_pass_batch(prompts) - expected).max() < 1e-5
    d = r.route(prompts[0])
    assert d.tier in r.ladder.names
    assert r.route("").tier in r.ladder.names
    # Its decisions come without loggable features (they miss the encoder's dense
    # vector): a features log says why instead.
    d2, f = r.route_with_features(prompts[0])
    assert f is None and r.prompt_features(prompts[0]) is None
    assert r.features_note == "accurate_featurizer"
    assert (d2.tier, d2.p_pass) == (d.tier, d.p_pass)
