"""The outcomes file labeling writes trains a router with the unchanged training pipeline."""

from __future__ import annotations

from test_labeling_support import Lab, read_jsonl

from labeling.config import LabelConfig
from outcomes import read_outcomes


def test_labeled_prompts_train_a_router(lab: Lab, bucket: str) -> None:
    from router import Router
    from training.model import ModelConfig
    from training.pipeline import TrainConfig, train

    recs = [r for r in lab.mmlu if r["split"] == "train"][:200]
    assert len(recs) == 200
    srv = lab.start_server(recs)
    out = lab.tmp / "labeled.jsonl"
    s = lab.batch(LabelConfig(lab.prompts(recs), out, progress=False), srv, bucket)
    assert s.status == "complete" and len(read_outcomes(out)) == 200
    assert len(read_jsonl(out)) == 200
    result = train(
        TrainConfig(
            outcomes=out,
            tiers=lab.ladder_path,
            out=lab.tmp / "bundle",
            folds=3,
            model=ModelConfig(n_clusters=(4, 8)),
        )
    )
    assert len(result.labels) == 200
    router = Router.load(lab.tmp / "bundle")
    d = router.route(recs[0]["prompt"])
    assert d.tier in lab.ladder.names and set(d.p_pass) == set(lab.ladder.names)
