"""Properties that deliberate breakages of issue 14 used to slip past: stage 2's static latents come from the
observed frames only, and the generator calibration's copy-frame-11 Jaccard is the hand-computed value.
(Suppression and submission order: tests/test_predict_exact.py.)"""
import numpy as np
import pytest
import torch

from tools.generator.calibrate import CEILING, COPY, predictor_figures
from tests.conftest import TINY_DDPM, make_first_stage_checkpoint
from tools.core.config import apply_overrides, load_yaml
from tools.core.distributed import DistContext
from tools.predict.first_stage_io import first_stage_record
from tools.predict.video_predictor import LatentScales
from tools.train.ddpm import DiffusionTask


@pytest.fixture(scope="module")
def diffusion_task(tmp_path_factory) -> DiffusionTask:
    first = make_first_stage_checkpoint(tmp_path_factory.mktemp("fs") / "fs.pth")
    cfg = apply_overrides(load_yaml("configs/latent-diffusion/tiny.yaml"), TINY_DDPM)
    cfg.run = {"exp": "ddpm", "seed": 0}
    torch.manual_seed(0)
    task = DiffusionTask(cfg, DistContext(0, 1, 0, torch.device("cpu")), first_stage_record(str(first), cfg))
    task.scales = LatentScales(motion=1.0, static=1.0)
    return task


def _static(task, frames, obs_idx, obs_keep):
    motion, features = task.latents.encode({}, frames)
    return task.encode_batch(motion, features, obs_idx, obs_keep)[1]


def test_stage2_static_latents_see_only_the_kept_observed_frames(diffusion_task):
    frames = torch.rand(2, 22, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    obs_idx = torch.arange(11).expand(2, 11)
    obs_keep = torch.ones(2, 11, dtype=torch.bool)
    obs_keep[0, 6:] = False  # clip 0 keeps frames 0-5 only (MCVD-style masked conditioning)
    static = _static(diffusion_task, frames, obs_idx, obs_keep)
    assert static is not None and static.shape[0] == 2
    unseen = frames.clone()
    unseen[0, 6:] = -unseen[0, 6:]  # clip 0: its masked observed frames and every future frame
    unseen[1, 11:] = -unseen[1, 11:]  # clip 1: every future frame
    static_unseen = _static(diffusion_task, unseen, obs_idx, obs_keep)
    assert torch.equal(static_unseen, static), "static latents changed with frames they must not see"
    seen = frames.clone()
    seen[:, 2] = -seen[:, 2]  # an observed, kept frame of both clips
    static_seen = _static(diffusion_task, seen, obs_idx, obs_keep)
    assert not torch.allclose(static_seen[0], static[0]) and not torch.allclose(static_seen[1], static[1])


def _square_video(frame11_cols: slice, frame22_cols: slice, size: int = 20) -> np.ndarray:
    """(22, 20, 20) masks: a 10x10 square of class 5 in rows 0-9; frames 1-11 at frame11_cols, 12-22 at
    frame22_cols."""
    masks = np.zeros((22, size, size), np.uint8)
    masks[:11, :10, frame11_cols] = 5
    masks[11:, :10, frame22_cols] = 5
    return masks


def test_calibration_copy_frame11_jaccard_is_the_hand_computed_value():
    # The square moves 5 columns: class 5 overlaps 50 of 150 pixels (IoU 1/3); the background overlaps
    # 400 - 150 = 250 of 400 - 50 = 350 pixels (IoU 5/7). Mean over the two classes present: 11/21.
    figures = predictor_figures([_square_video(slice(0, 10), slice(5, 15))])
    assert figures[COPY].value == pytest.approx(11 / 21, abs=1e-6)
    assert figures[COPY].low == figures[COPY].high == pytest.approx(11 / 21, abs=1e-6)
    assert figures[CEILING].value == pytest.approx(1.0), "moving the frame-11 square by its true shift is exact"
    still = predictor_figures([_square_video(slice(0, 10), slice(0, 10))])
    assert still[COPY].value == pytest.approx(1.0), "an object that does not move is copied exactly"
