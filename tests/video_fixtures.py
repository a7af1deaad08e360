"""Tiny natural-video datasets written with PyAV: moving textured patterns in a UCF-101 layout or a plain folder."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

UCF_CLASSES = ("ApplyEyeMakeup", "Biking")


def moving_pattern(n_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: a smooth colour gradient with a bright square drifting across it."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(ys * rng.uniform(1, 3) + xs * rng.uniform(0, 2)) % 255,
                     (xs * rng.uniform(1, 3)) % 255, np.full_like(ys, rng.integers(40, 200))], -1)
    size = max(height // 4, 2)
    y0, x0 = rng.integers(0, height - size), rng.integers(0, width - size)
    vy, vx = rng.uniform(-1.5, 1.5), rng.uniform(-2, 2)
    frames = []
    for t in range(n_frames):
        frame = base.copy()
        top = int(np.clip(y0 + vy * t, 0, height - size))
        left = int(np.clip(x0 + vx * t, 0, width - size))
        frame[top:top + size, left:left + size] = (250, 240, 60)
        frames.append(frame)
    return np.stack(frames).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, codec: str = "mpeg4") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_ucf_layout(root: Path, n_frames: int = 40, height: int = 48, width: int = 64,
                     per_class: tuple[int, int] = (2, 1)) -> Path:
    """<root>/UCF-101/<class>/v_<class>_gNN_c01.avi with trainlist01/testlist01/classInd: per class, per_class[0]
    train videos and per_class[1] test videos."""
    lists = {"train": [], "test": []}
    seed = 0
    for label, name in enumerate(UCF_CLASSES, start=1):
        for split, count in zip(("train", "test"), per_class):
            for _ in range(count):
                seed += 1
                file_name = f"v_{name}_g{seed:02d}_c01.avi"
                write_video(root / "UCF-101" / name / file_name, moving_pattern(n_frames, height, width, seed))
                lists[split].append(f"{name}/{file_name}" + (f" {label}" if split == "train" else ""))
    split_dir = root / "ucfTrainTestlist"
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(UCF_CLASSES, start=1)))
    (split_dir / "trainlist01.txt").write_text("\n".join(lists["train"]) + "\n")
    (split_dir / "testlist01.txt").write_text("\n".join(lists["test"]) + "\n")
    return root
