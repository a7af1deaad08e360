"""Run logging: TensorBoard events and a stats.jsonl line per log step, written by rank 0 only."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch


class RunLogger:
    """Writes scalars to TensorBoard and stats.jsonl, and images to TensorBoard.

    On ranks other than 0 every call is a no-op, so callers never branch on the rank.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._writer = None
        self._stats = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow import

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            self._stats = open(self.run_dir / "stats.jsonl", "a", encoding="utf-8")

    def log_scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
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
            self._writer.add_image(tag, image.detach().float().clamp(0, 1).cpu(), step)

    def flush(self) -> None:
        if self.enabled:
            self._writer.flush()

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._stats.close()
            self.enabled = False


def read_stats(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's stats.jsonl (for reports and tests)."""
    path = Path(run_dir) / "stats.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
