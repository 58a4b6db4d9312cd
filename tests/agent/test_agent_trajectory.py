"""to_batch: one row per segment, masks exactly on sampled ids, advantages on those only."""

import numpy as np
import pytest

from sandmle.agent.trajectory import Segment, Trajectory, dumps, loads, segment_rows, to_batch


def _traj(tid, pieces):
    """pieces: list of segments, each a list of (ids, sampled, logprobs)."""
    t = Trajectory(traj_id=tid, task_id="t", task_dir="/t", segments=[])
    for seg_pieces in pieces:
        s = Segment()
        for ids, sampled, lp in seg_pieces:
            s.append(ids, sampled, lp)
        t.segments.append(s)
    return t


def test_to_batch_rows_masks_logprobs_and_advantages():
    a = _traj("a", [[([1, 2, 3], False, None), ([4, 5], True, [-0.5, -0.25]),
                     ([6], False, None), ([7], True, [-1.0])]])
    b = _traj("b", [[([1, 2], False, None), ([9], True, [-2.0])],
                    [([1, 2, 6], False, None), ([8, 8], True, [-0.1, -0.2])]])
    batch = to_batch([a, b], pad_to=8, advantages=[1.5, -1.0], pad_rows_to=4)
    assert set(batch) == {"tokens", "positions", "attention_mask", "loss_mask", "old_logprobs",
                          "advantages"}
    assert batch["tokens"].shape == (4, 8)
    np.testing.assert_array_equal(batch["tokens"][0], [1, 2, 3, 4, 5, 6, 7, 0])
    np.testing.assert_array_equal(batch["loss_mask"][0], [0, 0, 0, 1, 1, 0, 1, 0])
    np.testing.assert_allclose(batch["old_logprobs"][0], [0, 0, 0, -0.5, -0.25, 0, -1.0, 0])
    np.testing.assert_allclose(batch["advantages"][0], 1.5 * batch["loss_mask"][0])
    # b's two segments are two rows with b's advantage; the 4th row is padding.
    np.testing.assert_array_equal(batch["tokens"][2, :5], [1, 2, 6, 8, 8])
    np.testing.assert_allclose(batch["advantages"][1:3].sum(), -1.0 * 3)
    assert not batch["attention_mask"][3].any() and batch["loss_mask"][3].sum() == 0
    np.testing.assert_array_equal(segment_rows([a, b]), [0, 1, 1])
    np.testing.assert_array_equal(batch["positions"][1], np.arange(8))


def test_include_drops_a_trajectory_from_the_loss_only():
    a = _traj("a", [[([1], False, None), ([2], True, [-1.0])]])
    b = _traj("b", [[([1], False, None), ([3], True, [-1.0])]])
    batch = to_batch([a, b], include=[True, False])
    assert batch["loss_mask"][1].sum() == 0 and batch["attention_mask"][1].sum() == 2
    assert batch["old_logprobs"][1].sum() == 0


def test_errors_name_the_problem():
    a = _traj("long", [[([1] * 10, False, None)]])
    with pytest.raises(ValueError, match="long.*10 tokens"):
        to_batch([a], pad_to=4)
    with pytest.raises(ValueError, match="advantages for 1 trajector"):
        to_batch([a], advantages=[1.0, 2.0])
    with pytest.raises(ValueError, match="logprobs"):
        Segment().append([1, 2], True, [0.0])


def test_json_round_trip():
    a = _traj("a", [[([1, 2], False, None), ([4], True, [-0.5])]])
    back = loads(dumps([a]))
    assert back[0] == a
