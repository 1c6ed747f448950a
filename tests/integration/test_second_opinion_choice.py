"""The second opinion chosen from data: each candidate the ladder names, and none, fitted
as a cascade on the training split; the best out-of-fold system is kept and named in the
bundle's ladder."""

from __future__ import annotations

from pathlib import Path

from realdata import LADDERS, train_quick

from router import Router
from router.ladder import Ladder

MIXTRAL = """
[[second_opinion_candidate]]
name = "mixtral"
model_id = "mistral.mixtral-8x7b-instruct-v0:1"
outcomes_key = "Mixtral-8x7B-Instruct-v0.1"
price_in_per_mtok = 0.45
price_out_per_mtok = 0.7
max_tokens = 1024
"""


def test_train_compares_the_candidates_and_keeps_the_best_out_of_fold(
    answers_slice: Path, tmp_path: Path
) -> None:
    ladder_file = tmp_path / "ladder.toml"
    ladder_file.write_text((LADDERS / "mmlu_pro_answers.toml").read_text() + MIXTRAL)
    ladder = Ladder.load(ladder_file)
    assert [t.name for t in ladder.second_opinion_options] == ["second", "mixtral"]
    result = train_quick(answers_slice, ladder_file, tmp_path / "bundle")
    table = result.report["cascade"]["second_opinion_choice"]
    assert [row["second_opinion"] for row in table] == ["second", "mixtral", None]
    kept = [row for row in table if row["kept"]]
    assert len(kept) == 1
    assert kept[0]["oof_system_pgr_auc"] == max(row["oof_system_pgr_auc"] for row in table)
    # The bundle's ladder names the one kept, and nothing else.
    router = Router.load(result.bundle)
    named = router.ladder.second_opinion.name if router.ladder.second_opinion else None
    assert named == kept[0]["second_opinion"]
    assert router.ladder.second_opinion_candidates == ()
    assert result.report["cascade"]["second_opinion"] == named
