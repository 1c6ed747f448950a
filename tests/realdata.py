"""The real data the tests read, importable by any test module (a conftest is not: with
several test folders each having one, `from conftest import` finds whichever came last).

Under CI=true a missing ../shared/data is a failure, never a skip.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from training.pipeline import TrainResult

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TIER_ROUTER_SHARED_DATA", REPO.parent / "shared" / "data"))
LADDERS = REPO / "data" / "ladders"
MISSING_DATA = "real routing data"  # how every skip for missing shared data starts


def require_shared(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.is_file():
        msg = f"{MISSING_DATA} {p} is missing (expected ../shared/data beside the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def slice_outcomes(src: Path, dst: Path, n_train: int, n_test: int) -> Path:
    """Evenly spaced train and test lines of a real outcomes file (kept verbatim)."""
    lines: dict[str, list[str]] = {"train": [], "test": []}
    with gzip.open(src, "rt", encoding="utf-8") as f:
        for line in f:
            split = json.loads(line).get("split")
            if split in lines:
                lines[split].append(line)
    with dst.open("w", encoding="utf-8") as out:
        for split, n in (("train", n_train), ("test", n_test)):
            rows = lines[split]
            step = max(1, len(rows) // n)
            out.writelines(rows[::step][:n])
    return dst


def train_quick(
    outcomes: Path,
    tiers: Path,
    out: Path,
    *,
    clusters: tuple[int, ...] = (8, 24),
    folds: int = 3,
    **settings: Any,
) -> TrainResult:
    """A bundle as the suite's fixtures train one: few clusters and folds keep it quick.
    `settings` are further TrainConfig fields (no MLflow)."""
    from training.model import ModelConfig
    from training.pipeline import TrainConfig, train

    model = ModelConfig(n_clusters=clusters)
    return train(
        TrainConfig(outcomes=outcomes, tiers=tiers, out=out, model=model, folds=folds, **settings)
    )


def link_archive(path: Path, member: str, kind: bytes, target: str) -> Path:
    """A .tar.gz whose one entry `member` is a link (tarfile.SYMTYPE or LNKTYPE) to
    `target`, which a bundle loader must refuse rather than follow."""
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.type = kind
        info.linkname = target
        tf.addfile(info)
    return path
