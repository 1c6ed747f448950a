import json

import numpy as np
import pytest

from router.joint_space import JointSpace
from router.text_features import FEATURE_NAMES

RNG = np.random.default_rng(0)
HAND = RNG.normal(size=(50, len(FEATURE_NAMES))) * 3 + 1
EMB = RNG.normal(size=(50, 16)).astype(np.float32)
DENSE = RNG.normal(size=(50, 8)).astype(np.float32)


@pytest.mark.parametrize(
    "names", [(), ("log_chars",), ("log_chars", "digits_share", "upper_share")]
)
@pytest.mark.parametrize("with_dense", [False, True])
@pytest.mark.parametrize("centred", [False, True])
def test_single_rows_equal_batch_rows_and_are_unit_norm(names, with_dense, centred) -> None:
    space = JointSpace.fit(HAND, names, weight=0.2, dense_weight=0.7, emb=EMB if centred else None)
    assert len(space.center) == (16 if centred else 0)
    dense = DENSE if with_dense else None
    batch = space.apply(EMB, HAND, dense)
    assert batch.shape == (50, 16 + (8 if with_dense else 0) + len(names))
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, rtol=1e-5)
    for i in range(0, 50, 7):
        one = space.apply_one(EMB[i] * 5.0, HAND[i].tolist(), None if dense is None else dense[i])
        np.testing.assert_allclose(one, batch[i], atol=1e-6)


def test_hand_part_is_standardised_weighted_and_clipped() -> None:
    space = JointSpace.fit(HAND, ("log_chars",), weight=0.5)
    col = HAND[:, 0]
    z = np.array(
        [
            space.apply_one(np.ones(4, np.float32), [v, *[0.0] * 17], None)[-1]
            for v in (col.mean(), col.mean() + col.std(), col.mean() + 100 * col.std())
        ]
    )
    scale = 1 / np.sqrt(1 + np.array([0.0, 0.25, 2.25]))  # |[emb, z]| with z = 0, 0.5, 1.5
    np.testing.assert_allclose(z, np.array([0.0, 0.5, 1.5]) * scale, atol=1e-5)


def test_centring_removes_the_direction_all_prompts_share() -> None:
    # Summed static vectors share a common direction; it crowds all cosines near 1.
    shared = EMB + 4.0 * np.ones(16, dtype=np.float32)
    plain = JointSpace.fit(HAND, (), weight=0.0).apply(shared, HAND, None)
    space = JointSpace.fit(HAND, (), weight=0.0, emb=shared)
    centred = space.apply(shared, HAND, None)
    off_diagonal = ~np.eye(50, dtype=bool)
    assert (plain @ plain.T)[off_diagonal].mean() > 0.9
    assert abs((centred @ centred.T)[off_diagonal].mean()) < 0.1
    unit = shared / np.linalg.norm(shared, axis=1, keepdims=True)
    np.testing.assert_allclose(space.center, unit.mean(axis=0), atol=1e-6)


def test_json_round_trip_and_validation() -> None:
    space = JointSpace.fit(HAND, ("log_chars", "choice_options"), weight=0.2, emb=EMB)
    assert JointSpace.from_json(space.to_json()) == space
    doc = json.loads(space.to_json())
    older = {k: v for k, v in doc.items() if k != "center"}  # bundles from before centring
    assert JointSpace.from_json(json.dumps(older)).center == ()
    for bad, msg in [
        ({**doc, "center": [1.0, float("nan")]}, "finite"),
        ({**doc, "hand_features": ["no_such_feature", "log_chars"]}, "unknown hand features"),
        ({**doc, "hand_scale": [1.0]}, "need 2 values"),
        ({**doc, "hand_limit": float("nan")}, "finite"),
        ({k: v for k, v in doc.items() if k != "dense_weight"}, "missing or invalid"),
    ]:
        with pytest.raises(ValueError, match=msg):
            JointSpace.from_json(json.dumps(bad))
