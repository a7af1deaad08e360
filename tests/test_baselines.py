"""Frame-22 baselines: copy frame 11 (true or segmented masks), class suppression, true-frame segmentation."""

import numpy as np
import pytest
import torch

from evals.scoring.motion_baselines import copy_last_observed
from evals.scoring.baselines import (baseline_table, copy_last_observed_suppressed, frame22_truth,
                             segment_true_frame, split_videos)
from tools.predict.segmenter_io import load_segmenter
from tests.conftest import make_segmenter_checkpoint as tiny_segmenter_checkpoint
from tests.conftest import write_synthetic_dataset
from tools.core.errors import UserError


def numpy_jaccard(pred: np.ndarray, true: np.ndarray) -> float:
    """Multiclass Jaccard written out: one confusion over all pixels, IoU per class seen, mean."""
    ious = []
    for cls in np.union1d(np.unique(pred), np.unique(true)):
        intersection = np.logical_and(pred == cls, true == cls).sum()
        union = np.logical_or(pred == cls, true == cls).sum()
        ious.append(intersection / union)
    return float(np.mean(ious))


def test_copy_frame11_truth_matches_independent_jaccard(synthetic_clevrer):
    masks = [np.load(synthetic_clevrer / "val" / name / "mask.npy") for name in ("video_3", "video_4")]
    expected = numpy_jaccard(np.stack([m[10] for m in masks]), np.stack([m[21] for m in masks]))
    scores = baseline_table(synthetic_clevrer, "val", progress=False)
    assert set(scores) == {"copy_frame11_truth", "constant_velocity_truth", "damped_velocity_truth",
                           "friction_velocity_truth",
                           "true_displacement_truth"}
    assert scores["copy_frame11_truth"] == pytest.approx(expected, abs=1e-6)
    # squares moving in straight lines: moving frame 11 by the true displacement beats copying it
    assert scores["true_displacement_truth"] > scores["copy_frame11_truth"]
    assert 0.0 < expected < 1.0  # the squares move, so copying is imperfect


def test_copy_takes_the_last_observed_frame():
    observed = torch.arange(2 * 11 * 4 * 5, dtype=torch.int64).view(2, 11, 4, 5) % 49
    assert torch.equal(copy_last_observed(observed), observed[:, 10])
    assert torch.equal(copy_last_observed(observed[0]), observed[0, 10])


def test_suppression_with_true_masks_equals_plain_copy(synthetic_clevrer):
    videos = split_videos(synthetic_clevrer, "train")
    observed = torch.stack([torch.from_numpy(np.load(e.path / "mask.npy"))[:11] for e in videos.entries])
    assert torch.equal(copy_last_observed_suppressed(observed, min_pixels=1), copy_last_observed(observed))


def test_suppression_removes_speckles_below_the_threshold():
    observed = torch.zeros(11, 8, 8, dtype=torch.uint8)
    observed[:, 0:4, 0:4] = 7            # a real object, 16 pixels in every frame
    observed[10, 6, 6:9] = 30            # a 2-pixel speckle of a hallucinated class in frame 11 only
    kept = copy_last_observed_suppressed(observed, min_pixels=1)
    cleaned = copy_last_observed_suppressed(observed, min_pixels=5)
    assert (kept == 30).sum() == 2
    assert (cleaned == 30).sum() == 0 and (cleaned == 7).sum() == 16 and (cleaned == 0).sum() == 48


def test_segmenter_baselines_and_ceiling(synthetic_clevrer, tmp_path):
    segmenter = load_segmenter(tiny_segmenter_checkpoint(tmp_path / "seg.pth"))
    frames = torch.rand(3, 3, 40, 60)
    masks = segment_true_frame(segmenter, frames, batch_size=2)
    assert masks.shape == (3, 40, 60) and masks.dtype == torch.uint8 and int(masks.max()) < 49
    scores = baseline_table(synthetic_clevrer, "val", segmenter=segmenter, video_ids=[4], progress=False)
    assert set(scores) == {"copy_frame11_truth", "copy_frame11_segmenter", "copy_frame11_segmenter_suppressed",
                           "segment_true_frame22", "constant_velocity_truth", "damped_velocity_truth",
                           "friction_velocity_truth",
                           "true_displacement_truth"}
    assert all(0.0 <= value <= 1.0 for value in scores.values())


def test_hidden_truth_from_generator_files(tmp_path):
    root = write_synthetic_dataset(tmp_path / "data", seed=3, splits={"hidden": 3})
    rng = np.random.default_rng(0)
    full = rng.integers(0, 49, size=(3, 22, 160, 240), dtype=np.uint8)
    torch.save(torch.from_numpy(full[:, 21].copy()), root / "hidden_masks.pt")
    videos = split_videos(root, "hidden", video_ids=[2, 0])
    assert torch.equal(frame22_truth(videos), torch.from_numpy(full[[2, 0], 21]))  # from hidden_masks.pt
    (root / "hidden_truth").mkdir()
    for index in range(3):
        np.save(root / "hidden_truth" / f"video_{index}.npy", full[index])
    assert torch.equal(frame22_truth(videos), torch.from_numpy(full[[2, 0], 21]))  # from hidden_truth/
    expected = numpy_jaccard(full[[2, 0], 10], full[[2, 0], 21])
    scores = baseline_table(root, "hidden", video_ids=[2, 0], progress=False)
    assert scores["copy_frame11_truth"] == pytest.approx(expected, abs=1e-6)


def test_unscoreable_split_and_unknown_videos_refused(synthetic_clevrer):
    with pytest.raises(UserError, match="no true frame-22 masks"):
        baseline_table(synthetic_clevrer, "unlabeled", progress=False)
    with pytest.raises(UserError, match=r"videos \[99\]"):
        split_videos(synthetic_clevrer, "val", video_ids=[99])
