"""Writing a bundle: atomic replacement, and a version hash that covers every decision."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from router import Router
from router.bundle import decision_digest


def _config(outcomes: Path, ladder: Path, out: Path):
    from training.model import ModelConfig
    from training.pipeline import TrainConfig

    return TrainConfig(
        outcomes=outcomes, tiers=ladder, out=out, model=ModelConfig(n_clusters=(8,)), folds=2
    )


def test_a_failed_export_leaves_the_old_bundle_whole(
    small_outcomes: Path, small_ladder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.pipeline as pipeline

    out = tmp_path / "bundle"
    first = pipeline.train(_config(small_outcomes, small_ladder, out))

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "export_model", broken)
    with pytest.raises(OSError, match="disk full"):
        pipeline.train(_config(small_outcomes, small_ladder, out))
    # The old bundle is still there, whole, and nothing half-written is left beside it.
    assert Router.load(out).version == first.router_version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_retraining_replaces_the_bundle(
    small_outcomes: Path, small_ladder: Path, tmp_path: Path
) -> None:
    from training.pipeline import train

    out = tmp_path / "bundle"
    train(_config(small_outcomes, small_ladder, out))
    (out / "stale.txt").write_text("from an older run")  # not in the manifest
    again = train(_config(small_outcomes, small_ladder, out))
    assert not (out / "stale.txt").exists()
    assert Router.load(out).version == again.router_version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_the_version_hash_covers_every_file_that_changes_a_decision(
    trained_bundle: Path, tmp_path: Path
) -> None:
    base = decision_digest(trained_bundle)
    for name, edit in (
        ("ladder.toml", lambda t: t.replace("max_tokens = ", "max_tokens = 1", 1)),
        ("joint_space.json", lambda t: t.replace("0.", "0.9", 1)),
        ("featurizer.json", lambda t: t.replace("1536", "1535")),
    ):
        copy = tmp_path / name
        shutil.copytree(trained_bundle, copy)
        (copy / name).write_text(edit((copy / name).read_text()))
        assert decision_digest(copy) != base, name
    copy = tmp_path / "report-only"
    shutil.copytree(trained_bundle, copy)
    (copy / "train_report.json").write_text("{}")
    assert decision_digest(copy) == base  # how it was made is not what it decides
    assert Router.load(trained_bundle).version.endswith(base[:8])
