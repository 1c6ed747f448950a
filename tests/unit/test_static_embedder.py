from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np
import pytest

from router.static_embedder import StaticEmbedder
from router.text_features import N_TOKEN_STATS
from router.wordpiece import WordPieceTokenizer

WORDS = ["[PAD]", "[UNK]", "why", "compare", "def", "return", "##s", "the", "a", "?", "(", ")"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
TOK = WordPieceTokenizer(VOCAB)
TABLE = np.random.default_rng(0).normal(size=(len(VOCAB), 6)).astype(np.float32)
TEXTS = [
    "why compare the a?",
    "def return(the) a a a",
    "Thes the   whys\tcompare\n\n(a)",
    "xyz unknown words ??",
    "the " * 300,
]


def token_level(text: str) -> np.ndarray:
    ids = TOK.encode(text) or [VOCAB["[UNK]"]]
    return TABLE[ids].sum(axis=0)


def test_sums_equal_the_token_level_sum_of_table_rows(kernels: ModuleType | None) -> None:
    emb = StaticEmbedder(TOK, TABLE, kernels=kernels)
    for text in TEXTS:
        got = emb.sums(text)
        assert got.shape == (emb.width,)
        np.testing.assert_allclose(got[: TABLE.shape[1]], token_level(text), rtol=1e-5, atol=1e-5)
        assert got[-1] == len(TOK.encode(text))  # the token count column


def test_a_full_cache_gives_the_same_numbers_and_stops_growing(
    kernels: ModuleType | None,
) -> None:
    roomy = StaticEmbedder(TOK, TABLE, kernels=kernels)
    tight = StaticEmbedder(TOK, TABLE, capacity=2, kernels=kernels)
    for text in TEXTS * 2:  # float32 sums of up to 300 rows, added in another order
        np.testing.assert_allclose(tight.sums(text), roomy.sums(text), rtol=1e-5, atol=1e-5)
    assert len(tight._rows) == 2


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x01\x02", "\ud800"])
def test_text_without_tokens_reads_as_one_unknown_token(
    text: str, kernels: ModuleType | None
) -> None:
    got = StaticEmbedder(TOK, TABLE, kernels=kernels).sums(text)
    np.testing.assert_allclose(got[: TABLE.shape[1]], TABLE[VOCAB["[UNK]"]])
    assert got[-N_TOKEN_STATS:][-1] == 1


def test_concurrent_callers_see_complete_rows(kernels: ModuleType | None) -> None:
    shared = StaticEmbedder(TOK, TABLE, capacity=4, kernels=kernels)
    texts = [f"{w} the a {i % 7}" for i, w in enumerate(WORDS * 40)]
    expected = [StaticEmbedder(TOK, TABLE).sums(t) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(shared.sums, texts))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)


def test_table_too_small_for_the_vocab_is_refused() -> None:
    with pytest.raises(ValueError, match="rows"):
        StaticEmbedder(TOK, TABLE[:3])


def test_shared_long_prefixes_are_summed_from_cached_blocks_with_the_same_result() -> None:
    shared = "why compare the a? def return(the)\n" * 60  # a few-shot style prefix
    texts = [shared + f"the {'a ' * i}why" for i in range(6)] + ["  \n" * 700 + "the a"]
    cached = StaticEmbedder(TOK, TABLE, kernels=None)  # the compiled path needs no blocks
    for text in texts * 2:
        np.testing.assert_allclose(cached.sums(text), token_level_row(text), rtol=1e-4, atol=1e-4)
    assert cached._blocks  # the shared blocks were admitted on their second sighting


def token_level_row(text: str) -> np.ndarray:
    ids = TOK.encode(text) or [VOCAB["[UNK]"]]
    emb = TABLE[ids].sum(axis=0)
    return np.concatenate([emb, StaticEmbedder(TOK, TABLE, capacity=1).sums(text)[-N_TOKEN_STATS:]])
