"""Shared fixtures: a tiny synthetic dataset in the competition folder format (moving coloured squares)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPLITS = {"train": 3, "val": 2, "unlabeled": 2, "hidden": 2}


def _render_video(rng: np.random.Generator, height: int = 160, width: int = 240):
    """22 frames of 2-3 squares moving in straight lines over a grey floor, with their class-id masks."""
    frames = np.full((22, height, width, 3), 90, np.uint8)
    masks = np.zeros((22, height, width), np.uint8)
    count = rng.integers(2, 4)
    ids = rng.choice(np.arange(1, 49), size=count, replace=False)
    for class_id in ids:
        colour = rng.integers(40, 255, size=3)
        size = int(rng.integers(14, 28))
        y, x = rng.uniform(10, height - 40), rng.uniform(10, width - 40)
        vy, vx = rng.uniform(-2, 2), rng.uniform(-3, 3)
        for t in range(22):
            top = int(np.clip(y + vy * t, 0, height - size))
            left = int(np.clip(x + vx * t, 0, width - size))
            frames[t, top:top + size, left:left + size] = colour
            masks[t, top:top + size, left:left + size] = class_id
    return frames, masks


def write_synthetic_dataset(root: Path, seed: int = 0, splits: dict[str, int] = SPLITS) -> Path:
    rng = np.random.default_rng(seed)
    video_id = 0
    for split, count in splits.items():
        for _ in range(count):
            frames, masks = _render_video(rng)
            folder = root / split / f"video_{video_id}"
            folder.mkdir(parents=True)
            n_frames = 11 if split == "hidden" else 22
            for t in range(n_frames):
                Image.fromarray(frames[t]).save(folder / f"image_{t}.png")
            if split in ("train", "val"):
                np.save(folder / "mask.npy", masks)
            video_id += 1
    return root


@pytest.fixture(scope="session")
def synthetic_clevrer(tmp_path_factory) -> Path:
    """A read-only tiny dataset: train 3, val 2, unlabeled 2, hidden 2 videos at 160x240."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic_clevrer"))
