"""Our cached WordPiece must give the same ids as the reference Rust tokenizer."""

from pathlib import Path

import pytest

from router.wordpiece import WordPieceTokenizer


@pytest.fixture(scope="module")
def minilm_tokenizer_json() -> Path:
    from training.assets import minilm_path

    return minilm_path() / "tokenizer.json"


def test_matches_hf_tokenizers_on_real_prompts(minilm_tokenizer_json: Path, shared_data: Path):
    from tokenizers import Tokenizer

    from outcomes import iter_outcomes

    ref = Tokenizer.from_file(str(minilm_tokenizer_json))
    ref.no_padding()
    ref.no_truncation()
    ours = WordPieceTokenizer.from_tokenizer_json(minilm_tokenizer_json)
    n = 0
    for name in ("mmlu_pro", "routerbench_subset", "llmrouter_dcrouter", "routerarena"):
        for i, rec in enumerate(iter_outcomes(shared_data / f"{name}.jsonl.gz")):
            if i >= 150:
                break
            assert ours.encode(rec.prompt) == ref.encode(rec.prompt, add_special_tokens=False).ids
            n += 1
    assert n == 600


def test_hostile_text_never_raises(minilm_tokenizer_json: Path) -> None:
    tok = WordPieceTokenizer.from_tokenizer_json(minilm_tokenizer_json)
    for text in ("", "\x00", "\ud800\udfff", "a" * 500, "Ünïcödé 東京 🤖", "\t\n\r"):
        ids = tok.encode(text)
        assert all(isinstance(i, int) and i >= 0 for i in ids)
    assert tok.encode("hello world") == tok.encode("Hello   WORLD")
