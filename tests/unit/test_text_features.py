import numpy as np

from router.static_embedder import StaticEmbedder
from router.text_features import FEATURE_NAMES, N_TOKEN_STATS, text_features
from router.wordpiece import WordPieceTokenizer

VOCAB = {
    w: i
    for i, w in enumerate(
        ["[PAD]", "[UNK]", "why", "compare", "def", "return", "##s", "the", "a", "?", "(", ")", "x"]
    )
}
TOK = WordPieceTokenizer(VOCAB)
EMB = StaticEmbedder(TOK, np.zeros((len(VOCAB), 4), dtype=np.float32))


def vector(text: str) -> np.ndarray:
    return np.array(text_features(text, EMB.sums(text)[-N_TOKEN_STATS:].tolist()))


def feats(text: str) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, vector(text), strict=True))


def test_markers_fire_on_what_they_name() -> None:
    plain = feats("the a the a")
    assert feats("why compare the a?")["reasoning_keywords"] > plain["reasoning_keywords"]
    assert feats("why compare the a?")["comparison_keywords"] > 0
    assert feats("def x(): return x")["code_keywords"] > 0
    assert feats("def x(): return x")["code_symbols_share"] > 0
    assert feats("What?\nA. one\nB. two\nC. three")["choice_options"] > 0
    assert feats("x = 3^2 + 4")["math_symbols_share"] > 0
    assert feats("12345 abc")["digits_share"] > 0.4


def test_edge_inputs_give_finite_vectors() -> None:
    for text in ("", "\x00\x01", "\ud800 lone surrogate", "日本語のテキスト", "x" * 1_000_000):
        v = vector(text)
        assert v.shape == (len(FEATURE_NAMES),)
        assert np.isfinite(v).all()
    assert feats("")["log_chars"] == 0.0


def test_length_reflects_full_text_even_beyond_scan_cap() -> None:
    assert feats("x " * 100_000)["log_chars"] > feats("x " * 10_000)["log_chars"]
