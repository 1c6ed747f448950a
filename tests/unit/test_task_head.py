"""The category head: learned from the task label, used from text alone."""

from __future__ import annotations

import numpy as np
import pytest

from training.featurize import Features
from training.model import OTHER_TASKS, TASK_MAX_NORM, ModelConfig, SoftClusterModel

CFG = ModelConfig(n_clusters=(1,), hand_weight=0.0, center=False, task_min_rows=5)


def _data(
    groups: dict[str, tuple[int, float]], seed: int = 0
) -> tuple[Features, np.ndarray, list[str]]:
    """Each category: its own embedding direction plus noise, and one tier pass rate."""
    rng = np.random.default_rng(seed)
    dims = 16
    emb, y, tasks = [], [], []
    for i, (name, (n, rate)) in enumerate(groups.items()):
        direction = np.zeros(dims)
        direction[i] = 4.0
        emb.append(direction + rng.normal(0, 1, (n, dims)))
        y.append((rng.random((n, 1)) < rate) * 1.0)
        tasks += [name] * n
    e = np.vstack(emb).astype(np.float32)
    return Features(e, np.zeros((len(e), 1), np.float32), None), np.vstack(y), tasks


def test_text_that_reads_like_a_category_gets_its_pass_rate() -> None:
    f, y, tasks = _data({"easy": (200, 0.9), "hard": (200, 0.1)})
    model = SoftClusterModel(CFG).fit(f, y, tasks=tasks)
    assert model.task_classes_ == ["easy", "hard"]
    assert model.shares_ == [0.5, 0.5]  # one cluster set, then the head
    p = model.predict_proba(f)[:, 0]
    # One cluster alone gives every prompt the overall rate (0.5); the head separates them.
    assert p[:200].mean() > 0.65 > 0.35 > p[200:].mean()
    without = SoftClusterModel(CFG).fit(f, y).predict_proba(f)[:, 0]
    assert np.ptp(without) < 1e-6
    assert float(np.linalg.norm(model.centroids_[-1], axis=1).max()) <= TASK_MAX_NORM + 1e-4


def test_small_categories_pool_and_the_head_needs_two_real_ones() -> None:
    f, y, tasks = _data({"a": (100, 0.8), "b": (100, 0.2), "tiny": (3, 0.5), "": (50, 0.5)})
    model = SoftClusterModel(CFG).fit(f, y, tasks=tasks)
    assert model.task_classes_ == [OTHER_TASKS, "a", "b"]  # unknown ("") rows sit out

    f1, y1, t1 = _data({"a": (100, 0.8), "tiny": (3, 0.2)})
    one = SoftClusterModel(CFG).fit(f1, y1, tasks=t1)
    assert one.task_classes_ == [] and one.shares_ == [1.0]
    off_cfg = ModelConfig(n_clusters=(1,), hand_weight=0.0, task_weight=0.0)
    off = SoftClusterModel(off_cfg).fit(f, y, tasks=tasks)
    assert off.task_classes_ == [] and len(off.centroids_) == 1


@pytest.mark.parametrize(
    "bad", [{"task_weight": -0.1}, {"task_weight": 1.5}, {"task_c": 0.0}, {"task_min_rows": 0}]
)
def test_bad_head_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="task_weight"):
        ModelConfig(**bad)  # type: ignore[arg-type]


def test_task_labels_must_line_up_with_prompts() -> None:
    f, y, tasks = _data({"a": (30, 0.8), "b": (30, 0.2)})
    with pytest.raises(ValueError, match="59 task labels for 60 prompts"):
        SoftClusterModel(CFG).fit(f, y, tasks=tasks[:-1])
