"""The outcomes file labeling writes trains a router with the unchanged training pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_labeling_support import ROLE, aws_for, read_jsonl, write_prompts

from labeling.batch import BatchClients, run_batch
from labeling.clients import control_client, s3_client
from labeling.config import BatchConfig, LabelConfig
from labeling.graders import ChoiceGrader, GraderSet
from outcomes import read_outcomes
from router.ladder import Ladder


def test_labeled_prompts_train_a_router(
    tmp_path: Path,
    mmlu: list[dict[str, Any]],
    ladder: Ladder,
    ladder_path: Path,
    start_server: Any,
    s3_url: str,
    bucket: str,
) -> None:
    from router import Router
    from training.model import ModelConfig
    from training.pipeline import TrainConfig, train

    recs = [r for r in mmlu if r["split"] == "train"][:200]
    assert len(recs) == 200
    srv = start_server(recs)
    aws = aws_for(srv, s3_url)
    out = tmp_path / "labeled.jsonl"
    s = run_batch(
        LabelConfig(write_prompts(tmp_path / "p.jsonl", recs), out, progress=False),
        BatchConfig(bucket, ROLE, poll_interval_s=0.05),
        ladder,
        GraderSet(ChoiceGrader()),
        BatchClients(control_client(aws), s3_client(aws)),
    )
    assert s.status == "complete" and len(read_outcomes(out)) == 200
    assert len(read_jsonl(out)) == 200
    result = train(
        TrainConfig(
            outcomes=out,
            tiers=ladder_path,
            out=tmp_path / "bundle",
            folds=3,
            model=ModelConfig(n_clusters=(4, 8)),
        )
    )
    assert len(result.labels) == 200
    router = Router.load(tmp_path / "bundle")
    d = router.route(recs[0]["prompt"])
    assert d.tier in ladder.names and set(d.p_pass) == set(ladder.names)
