"""Run logging: TensorBoard events and a stats.jsonl line per log step, written by rank 0 only."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from tools.core.atomic import write_text_atomic


class RunLogger:
    """Writes scalars to TensorBoard and stats.jsonl, and images to TensorBoard.

    On ranks other than 0 every call is a no-op, so callers never branch on the rank.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._writer = None
        self._stats = None
        self._purge_step: int | None = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def resume_at(self, step: int) -> None:
        """Drop what a killed run logged after its checkpoint's `step`, so every step appears once."""
        if not self.enabled:
            return
        path = self.run_dir / "stats.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line.strip() and _step_of(line) <= step]
            write_text_atomic(path, "".join(line + "\n" for line in kept))
        self._purge_step = step + 1  # TensorBoard hides its events after the checkpoint the same way

    def _open(self) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow import

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self._purge_step)
            self._stats = open(self.run_dir / "stats.jsonl", "a", encoding="utf-8")

    def log_scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        self._open()
        for key, value in values.items():
            self._writer.add_scalar(f"{prefix}/{key}", value, step)
        record = {"step": step, "time": round(time.time(), 3), "split": prefix}
        record.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                       for k, v in values.items()})
        self._stats.write(json.dumps(record) + "\n")
        self._stats.flush()

    def log_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """image: [3,H,W] float in [0,1] (e.g. a torchvision make_grid)."""
        if self.enabled:
            self._open()
            self._writer.add_image(tag, image.detach().float().clamp(0, 1).cpu(), step)

    def log_video(self, tag: str, video: torch.Tensor, step: int, fps: int = 8) -> None:
        """video: [T,3,H,W] float in [0,1] (e.g. frames side by side), shown as an animated GIF in TensorBoard's
        image tab. Encoded here with Pillow: SummaryWriter.add_video would need moviepy."""
        if not self.enabled:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        from tools.core.media import gif_bytes, to_uint8_frames

        self._open()
        frames = to_uint8_frames(video, value_range=(0.0, 1.0))
        image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                              encoded_image_string=gif_bytes(frames, fps))
        self._writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def flush(self) -> None:
        if self.enabled and self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self.enabled and self._writer is not None:
            self._writer.close()
            self._stats.close()
        self.enabled = False


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return math.inf  # a torn last line of a killed run: drop it


def read_stats(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's stats.jsonl (for reports and tests)."""
    path = Path(run_dir) / "stats.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
