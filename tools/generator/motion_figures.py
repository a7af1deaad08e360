"""Per-video figures of object size and motion, measured on true class-id masks (T, H, W).

Motion is read from object centroids: an object's speed at frame t is the distance its centroid
moved from frame t-1 to frame t (pixels/frame), defined when the object is visible in both.
These are the statistics `tools/generator/calibrate.py` compares between real and generated videos.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.data.classes import BACKGROUND, NUM_CLASSES, NUM_OBSERVED

STILL_PIXELS = 0.5         # a step shorter than this is standing still (segmentation jitter)
FAST_PIXELS = 2.0          # speed ratios are taken of objects moving faster than this
RATIO_LAG = 5              # ... comparing their speed now with their speed this many frames later
STILL_START_STEPS = 3      # an object still over its first steps in view is a "still object"
MOVING_PIXELS = 1.5        # it "starts moving" when it makes two consecutive steps longer than this


@dataclass
class VideoFigures:
    areas: list[int]                 # pixels of every (frame, object present)
    objects_per_frame: float
    displacements: list[float]       # every step of every object visible in both frames
    speed_ratios: list[float]        # speed RATIO_LAG frames later / speed now, fast objects
    still_objects: int               # objects standing still over their first steps
    still_started: int               # ... of which later start moving (hit by another)
    gains_after_observed: bool       # a class appears after frame 11
    gains_any: bool                  # a class appears after frame 1


def centroid_tracks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (T, classes, 2) as (row, column), NaN where absent, and areas (T, classes)."""
    frames, height, width = masks.shape
    rows, cols = np.mgrid[0:height, 0:width]
    tracks = np.full((frames, NUM_CLASSES, 2), np.nan)
    areas = np.zeros((frames, NUM_CLASSES), dtype=np.int64)
    for t, mask in enumerate(masks):
        ids = mask.ravel().astype(np.int64)
        areas[t] = np.bincount(ids, minlength=NUM_CLASSES)[:NUM_CLASSES]
        present = areas[t] > 0
        for axis, grid in enumerate((rows, cols)):
            sums = np.bincount(ids, weights=grid.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            tracks[t, present, axis] = sums[present] / areas[t, present]
    tracks[:, BACKGROUND] = np.nan
    areas[:, BACKGROUND] = 0
    return tracks, areas


def step_speeds(tracks: np.ndarray) -> np.ndarray:
    """(T-1, classes) centroid displacement from each frame to the next, NaN unless visible in both."""
    return np.linalg.norm(np.diff(tracks, axis=0), axis=-1)


def speed_ratios(speeds: np.ndarray, lag: int = RATIO_LAG, fast: float = FAST_PIXELS) -> list[float]:
    """speed[t + lag] / speed[t] for every object step faster than `fast` px/frame whose object is
    still measurable `lag` frames later (decelerating objects give ratios below 1)."""
    now, later = speeds[:-lag], speeds[lag:]
    valid = (now > fast) & np.isfinite(later)
    return (later[valid] / now[valid]).tolist()


def still_objects_started(speeds: np.ndarray) -> tuple[int, int]:
    """(objects standing still over their first STILL_START_STEPS steps, those that later start)."""
    still, started = 0, 0
    for steps in speeds.T:
        finite = steps[np.isfinite(steps)]
        if len(finite) < STILL_START_STEPS + 2 or np.any(finite[:STILL_START_STEPS] >= STILL_PIXELS):
            continue
        still += 1
        later = finite[STILL_START_STEPS:] > MOVING_PIXELS
        started += int(np.any(later[1:] & later[:-1]))
    return still, started


def video_figures(masks: np.ndarray) -> VideoFigures:
    """The calibration figures of one video's (T, H, W) class-id masks."""
    tracks, areas = centroid_tracks(masks)
    speeds = step_speeds(tracks)
    present = areas > 0
    observed = present[:NUM_OBSERVED].any(0)
    later = present[NUM_OBSERVED:].any(0)
    still, started = still_objects_started(speeds)
    return VideoFigures(
        areas=areas[present].tolist(),
        objects_per_frame=float(present.sum(1).mean()),
        displacements=speeds[np.isfinite(speeds)].tolist(),
        speed_ratios=speed_ratios(speeds),
        still_objects=still, still_started=started,
        gains_after_observed=bool(np.any(later & ~observed)),
        gains_any=bool(np.any(present.any(0) & ~present[0])))
