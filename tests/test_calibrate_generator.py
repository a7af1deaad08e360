"""Calibration figures and the motion predictors of evals/scoring/baselines.py, on masks with known motion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evals.scoring.motion_baselines import (constant_velocity_prediction, damped_velocity_prediction,
                                    friction_velocity_prediction, motion_baseline_scores,
                                    shift_last_observed, true_displacement_prediction)
from tools.generator.calibrate import (CONSTANT_VELOCITY, COPY, SPEED_RATIO, STILL_STARTED, VELOCITY_GAIN,
                                       markdown_table, summarize)
from tools.generator.motion_figures import still_objects_started, video_figures
from tools.core.errors import UserError

H, W = 60, 90


def square_video(path, size: int = 8, cls: int = 7, frames: int = 22) -> np.ndarray:
    """A (frames, H, W) mask of one square whose top-left corner follows `path(t) -> (row, col)`."""
    masks = np.zeros((frames, H, W), dtype=np.uint8)
    for t in range(frames):
        row, col = (int(round(x)) for x in path(t))
        masks[t, row:row + size, col:col + size] = cls
    return masks


def test_constant_velocity_is_exact_for_constant_velocity_and_copy_is_not():
    video = square_video(lambda t: (10, 2 + 3 * t))
    scores = motion_baseline_scores([video])
    assert scores["constant_velocity_truth"] == pytest.approx(1.0)
    assert scores["true_displacement_truth"] == pytest.approx(1.0)
    assert scores["copy_frame11_truth"] < 0.6


def test_constant_velocity_overshoots_an_object_that_stops():
    # Decelerating square: 2 px/frame until frame 11, then standing still.
    video = square_video(lambda t: (10, 2 + 2 * min(t, 11)))
    scores = motion_baseline_scores([video])
    assert scores["copy_frame11_truth"] > scores["constant_velocity_truth"]
    assert scores["true_displacement_truth"] == pytest.approx(1.0)


def test_damped_velocity_follows_an_object_that_slows_down_by_its_decay():
    # 3 px/frame, then a step of 8 px into frame 11, then each step half the one before
    def column(t: int) -> float:
        return 2 + 3 * t if t <= 9 else 37 + 8 * (1 - 0.5 ** (t - 10))
    video = torch.from_numpy(square_video(lambda t: (10, column(t)))).long()
    assert torch.equal(damped_velocity_prediction(video[:11], decay=0.5), video[21])
    assert not torch.equal(constant_velocity_prediction(video[:11]), video[21])


def test_friction_velocity_stops_a_slow_object_where_sliding_friction_would():
    # 3 px/frame, then a 1 px step into frame 11; the rule then covers 0.78 + 0.58 + 0.39 + 0.21 + 0.04 = 2 px
    def column(t: int) -> float:
        return 2 + 3 * t if t <= 9 else 29 + min(t - 9, 3)
    video = torch.from_numpy(square_video(lambda t: (10, column(t)))).long()
    at_160_rows = 0.15 * 160 / H  # the friction is given in pixels at 160 rows and scaled to the masks' height
    assert torch.equal(friction_velocity_prediction(video[:11], friction=at_160_rows), video[21])
    assert not torch.equal(damped_velocity_prediction(video[:11]), video[21])  # 0.85 decay: 4.7 px


def test_shift_drops_pixels_leaving_the_frame_and_classes_without_displacement():
    mask = torch.zeros(H, W, dtype=torch.uint8)
    mask[5:10, 80:88] = 3
    mask[30:35, 10:15] = 4
    shifted = shift_last_observed(mask, {3: (0.0, 5.0)})
    assert int((shifted == 3).sum()) == 5 * 5              # 3 of 8 columns moved past the right edge
    assert int((shifted == 4).sum()) == 0                   # no displacement given: dropped


def test_overlapping_shifted_objects_resolve_nearer_to_the_camera_on_top():
    mask = torch.zeros(H, W, dtype=torch.uint8)
    mask[10:20, 10:20] = 9           # higher in the image: farther from the camera
    mask[22:32, 10:20] = 5
    shifted = shift_last_observed(mask, {9: (8.0, 0.0), 5: (0.0, 0.0)})
    assert bool((shifted[22:28, 10:20] == 5).all())        # the lower object wins the overlap
    flipped = shift_last_observed(mask, {5: (0.0, 0.0), 9: (8.0, 0.0)})
    assert torch.equal(shifted, flipped)                    # independent of the dict order


def test_constant_velocity_keeps_a_just_entered_object_in_place_and_ceiling_drops_leavers():
    observed = torch.zeros(11, H, W, dtype=torch.uint8)
    observed[10, 40:45, 40:45] = 12                         # seen only in the last frame
    assert torch.equal(constant_velocity_prediction(observed), observed[10])
    gone = torch.zeros(H, W, dtype=torch.uint8)
    assert int(true_displacement_prediction(observed, gone).count_nonzero()) == 0


def test_motion_baselines_need_a_video():
    with pytest.raises(UserError, match="at least one"):
        motion_baseline_scores([])


def test_speed_ratio_of_an_exponentially_slowing_object():
    # Speed 12 * 0.9**t px/frame: five frames later the speed is 0.9**5 = 0.59 of what it was.
    positions = np.concatenate([[0.0], np.cumsum(12 * 0.9 ** np.arange(21))])
    figures = video_figures(square_video(lambda t: (20, 2 + positions[t] * 0.7)))
    assert np.median(figures.speed_ratios) == pytest.approx(0.9 ** 5, abs=0.08)


def test_still_objects_that_start_moving_are_counted():
    speeds = np.full((21, 3), np.nan)
    speeds[:, 0] = 0.0                                      # still throughout
    speeds[:, 1] = [0.0] * 8 + [3.0] * 13                   # still, then hit
    speeds[:, 2] = 4.0                                      # moving from the start: not still
    assert still_objects_started(speeds) == (2, 1)


def test_summary_and_table_flag_a_figure_outside_its_range():
    moving = square_video(lambda t: (10, 2 + 3 * t))
    still = square_video(lambda t: (30, 40), cls=20)
    videos = [np.maximum(moving, still), still.copy()]
    figures = summarize(videos)
    assert figures[SPEED_RATIO].value == pytest.approx(1.0)   # constant velocity: no slowing
    assert figures[VELOCITY_GAIN].value > 0.04
    assert figures[CONSTANT_VELOCITY].value > figures[COPY].value
    assert figures[STILL_STARTED].value == 0.0                 # two still objects, never hit
    table = markdown_table(figures, figures)
    speed_row = next(line for line in table.splitlines() if line.startswith(f"| {SPEED_RATIO}"))
    assert speed_row.endswith("| FAIL |") and "0.5 - 0.68" in speed_row
    gain_row = next(line for line in table.splitlines() if line.startswith(f"| {VELOCITY_GAIN}"))
    assert gain_row.endswith("| FAIL |") and "<= 0.04" in gain_row
