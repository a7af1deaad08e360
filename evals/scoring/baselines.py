"""Frame-22 baselines that need no video model, and the readers of a split's mask truth.

Every baseline predicts frame 22 (index 21) of a video from its observed frames 1-11 (indices 0-10):

- ``copy_frame11_truth``: the true mask of frame 11 copied as the frame-22 prediction (labeled splits, and
  the hidden split of a generated dataset, whose full masks lie in ``<root>/hidden_truth``).
- ``copy_frame11_segmenter``: the same with frame 11 segmented by a trained segmenter (any split).
- ``copy_frame11_segmenter_suppressed``: that copy with classes removed that never cover ``min_pixels``
  pixels in any segmented frame 1-11. Why only for segmenter masks: every class of frame 11's mask is,
  by definition, present in frames 1-11, so with true masks (or ``min_pixels=1``) suppression changes
  nothing; with a segmenter's masks a threshold above 1 removes the speckles of classes it hallucinates.
- ``segment_true_frame22``: the segmenter applied to the true frame 22, the ceiling that segmentation
  sets for any predictor of RGB frames (needs the true frame 22 image: not the hidden split).

The motion predictors on true masks (constant and damped velocity, the true-displacement ceiling) are in
evals/scoring/motion_baselines.py; their rows join the table whenever the true masks allow copying frame 11.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from evals.metrics.jaccard import jaccard_score
from evals.scoring.motion_baselines import (MOTION_BASELINES, constant_velocity_prediction, copy_last_observed,
                                    damped_velocity_prediction, friction_velocity_prediction,
                                    true_displacement_prediction)
from tools.core.errors import UserError
from tools.data.classes import NUM_FRAMES, NUM_OBSERVED, TARGET_FRAME
from tools.data.clevrer import VideoEntry, list_videos, read_frames, read_mask
from tools.predict.postprocess import present_classes, suppress_absent_mask

# Frames from the last observed one (frame 11) to the predicted one (frame 22).
HIDDEN_TRUTH_DIR = "hidden_truth"
HIDDEN_MASKS_FILE = "hidden_masks.pt"
DEFAULT_SEGMENTER_MIN_PIXELS = 5  # as predict.min_observed_pixels

BASELINE_LABELS = {
    "copy_frame11_truth": "copy frame 11 (true masks)",
    "copy_frame11_segmenter": "copy frame 11 (segmenter masks)",
    "copy_frame11_segmenter_suppressed": "copy frame 11 (segmenter masks, absent classes suppressed)",
    "segment_true_frame22": "segment the true frame 22 (segmentation ceiling)",
    "constant_velocity_truth": "shift frame 11 by constant velocity (true masks)",
    "damped_velocity_truth": "shift frame 11 by the last step decaying 0.85 per frame (true masks)",
    "friction_velocity_truth": "shift frame 11 by the last step slowing to 0.93 speed - 0.15 px per frame (true masks)",
    "true_displacement_truth": "shift frame 11 by the true 11->22 displacement (true masks, ceiling)",
    "friction_segmenter": "shift frame 11 by the friction rule (segmenter masks of frames 1-11, instance vote, with "
                          "the object classifier when given)",
}


# ----------------------------------------------------------------------------- the baselines themselves

def copy_last_observed_suppressed(masks_obs: torch.Tensor, min_pixels: int = 1) -> torch.Tensor:
    """copy_last_observed, with classes that cover fewer than `min_pixels` pixels in every observed
    frame set to background; [T, H, W] or [N, T, H, W] in, [H, W] or [N, H, W] out."""
    if masks_obs.dim() == 3:
        allowed = present_classes(masks_obs, min_pixels)
        return suppress_absent_mask(copy_last_observed(masks_obs), allowed)
    if masks_obs.dim() != 4:
        raise ValueError(f"observed masks must be [T, H, W] or [N, T, H, W], got {tuple(masks_obs.shape)}")
    return torch.stack([copy_last_observed_suppressed(video, min_pixels) for video in masks_obs])


def segment_frames(segmenter: torch.nn.Module, rgb: torch.Tensor, batch_size: int = 8, tta: bool = False
                   ) -> torch.Tensor:
    """uint8 class masks [N, H, W] of RGB frames [N, 3, H, W] in [0, 1], at the segmenter's trained size."""
    return segmenter.masks(rgb, tta=tta, batch_size=batch_size)


def segment_true_frame(segmenter: torch.nn.Module, frame21: torch.Tensor, batch_size: int = 8,
                       tta: bool = False) -> torch.Tensor:
    """The segmentation ceiling: masks [N, H, W] of the true frames 22 [N, 3, H, W] in [0, 1]."""
    return segment_frames(segmenter, frame21, batch_size, tta)


# ----------------------------------------------------------------------------- reading a split's truth

@dataclass(frozen=True)
class SplitVideos:
    """The videos of a split, restricted to (and ordered like) a list of ids when one is given."""

    root: Path
    split: str
    entries: list[VideoEntry]

    @property
    def video_ids(self) -> list[int]:
        return [entry.id for entry in self.entries]


def split_videos(root: str | Path, split: str, video_ids: Sequence[int] | None = None) -> SplitVideos:
    """The split's videos in natural order, or those named by `video_ids` in that order (each must exist)."""
    entries = list_videos(root, split)
    if not entries:
        raise UserError(f"{Path(root) / split}: the split holds no video_<id> folders.")
    if video_ids is not None:
        by_id = {entry.id: entry for entry in entries}
        missing = [video_id for video_id in video_ids if video_id not in by_id]
        if missing:
            raise UserError(f"videos {missing[:5]} of the predictions are not in {Path(root) / split}; "
                            f"evaluate against the dataset (--data_path) the predictions were made from.")
        entries = [by_id[video_id] for video_id in video_ids]
    return SplitVideos(Path(root), split, entries)


def _hidden_truth_file(videos: SplitVideos, entry: VideoEntry) -> Path:
    return videos.root / HIDDEN_TRUTH_DIR / f"video_{entry.id}.npy"


def full_truth_masks(videos: SplitVideos, entry: VideoEntry) -> torch.Tensor | None:
    """All 22 true masks of a video (uint8 [22, H, W]), or None when the dataset has none for it."""
    if entry.has_mask:
        return read_mask(entry.path, NUM_FRAMES)
    hidden_file = _hidden_truth_file(videos, entry)
    if videos.split == "hidden" and hidden_file.is_file():
        return read_mask(hidden_file, NUM_FRAMES)
    return None


def frame22_truth(videos: SplitVideos, progress: bool = False) -> torch.Tensor | None:
    """True frame-22 masks [N, H, W] uint8 of the videos, or None when the split has no frame-22 masks.

    Labeled splits read mask.npy; the hidden split of a generated dataset reads hidden_truth/ (or, without
    it, hidden_masks.pt, whose rows follow the natural order of all hidden videos)."""
    if videos.split == "hidden" and not all(_hidden_truth_file(videos, e).is_file() for e in videos.entries):
        return _hidden_masks_tensor(videos)
    masks = []
    for entry in tqdm(videos.entries, desc=f"true masks ({videos.split})", disable=not progress, unit="video"):
        full = full_truth_masks(videos, entry)
        if full is None:
            return None
        masks.append(full[TARGET_FRAME])
    return torch.stack(masks)


def _hidden_masks_tensor(videos: SplitVideos) -> torch.Tensor | None:
    path = videos.root / HIDDEN_MASKS_FILE
    if not path.is_file():
        return None
    try:
        stacked = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torn file, not a torch file
        raise UserError(f"{path}: cannot read the hidden split's masks ({type(error).__name__}); "
                        f"regenerate it with `python main.py --exp generate`.") from error
    all_ids = [entry.id for entry in list_videos(videos.root, "hidden")]
    if not isinstance(stacked, torch.Tensor) or stacked.dim() != 3 or len(stacked) != len(all_ids):
        raise UserError(f"{path}: expected a tensor [{len(all_ids)}, H, W] (one mask per hidden video), "
                        f"got {getattr(stacked, 'shape', type(stacked).__name__)}.")
    row_of = {video_id: row for row, video_id in enumerate(all_ids)}
    return stacked[[row_of[video_id] for video_id in videos.video_ids]].to(torch.uint8)


def has_true_frame(entry: VideoEntry, index: int = TARGET_FRAME) -> bool:
    return entry.n_frames > index


# ----------------------------------------------------------------------------- the table

def _observed_segmentations(segmenter, entry: VideoEntry, batch_size: int, tta: bool) -> torch.Tensor:
    return segment_frames(segmenter, read_frames(entry.path, range(NUM_OBSERVED)), batch_size, tta)


def baseline_predictions(videos: SplitVideos, segmenter: torch.nn.Module | None = None, batch_size: int = 8,
                         tta: bool = False, min_pixels: int = DEFAULT_SEGMENTER_MIN_PIXELS,
                         progress: bool = True) -> dict[str, torch.Tensor]:
    """Frame-22 masks [N, H, W] of every baseline that these inputs allow, keyed as BASELINE_LABELS."""
    rows: dict[str, list[torch.Tensor]] = {}
    can_copy_truth = True
    can_segment_truth = segmenter is not None and all(has_true_frame(e) for e in videos.entries)
    for entry in tqdm(videos.entries, desc=f"baselines ({videos.split})", disable=not progress, unit="video"):
        full = full_truth_masks(videos, entry) if can_copy_truth else None
        can_copy_truth = full is not None
        if full is not None:  # the motion baselines of the true masks: copy, constant velocity, ceiling
            observed = full[:NUM_OBSERVED].long()
            rows.setdefault("copy_frame11_truth", []).append(copy_last_observed(observed))
            rows.setdefault("constant_velocity_truth", []).append(constant_velocity_prediction(observed))
            rows.setdefault("damped_velocity_truth", []).append(damped_velocity_prediction(observed))
            rows.setdefault("friction_velocity_truth", []).append(friction_velocity_prediction(observed))
            rows.setdefault("true_displacement_truth", []).append(
                true_displacement_prediction(observed, full[TARGET_FRAME].long()))
        if segmenter is None:
            continue
        observed = _observed_segmentations(segmenter, entry, batch_size, tta)
        rows.setdefault("copy_frame11_segmenter", []).append(copy_last_observed(observed))
        rows.setdefault("copy_frame11_segmenter_suppressed", []).append(
            copy_last_observed_suppressed(observed, min_pixels))
        if can_segment_truth:
            true_frame = read_frames(entry.path, [TARGET_FRAME])
            rows.setdefault("segment_true_frame22", []).append(segment_true_frame(segmenter, true_frame)[0])
    if not can_copy_truth:
        for name in MOTION_BASELINES:
            rows.pop(name, None)
    return {name: torch.stack(masks) for name, masks in rows.items()}


def baseline_table(root: str | Path, split: str, segmenter: torch.nn.Module | None = None,
                   video_ids: Sequence[int] | None = None, batch_size: int = 8, tta: bool = False,
                   min_pixels: int = DEFAULT_SEGMENTER_MIN_PIXELS, device: str | torch.device = "cpu",
                   progress: bool = True, truth: torch.Tensor | None = None) -> dict[str, float]:
    """Competition Jaccard of each available baseline on a split (or on the videos `video_ids`).

    Without a segmenter only the true-mask copy is possible (labeled splits, generated hidden split).
    `truth` ([N, H, W] frame-22 masks) skips re-reading the truth when the caller has it."""
    videos = split_videos(root, split, video_ids)
    if truth is None:
        truth = frame22_truth(videos)
    if truth is None:
        raise UserError(f"{Path(root) / split}: no true frame-22 masks (no mask.npy, no {HIDDEN_TRUTH_DIR}/ or "
                        f"{HIDDEN_MASKS_FILE}), so no baseline can be scored; use a labeled split such as val.")
    predictions = baseline_predictions(videos, segmenter, batch_size, tta, min_pixels, progress)
    return {name: jaccard_score(masks, truth, device=device) for name, masks in predictions.items()}

