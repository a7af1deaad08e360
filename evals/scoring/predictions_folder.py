"""Reading a `--exp predict` run folder (submission.pt, video_ids.json, meta.json, frames.pt), checked."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tools.core.errors import UserError
from tools.data.classes import TARGET_FRAME


@dataclass
class Predictions:
    """What `--exp predict` wrote: frame-22 masks, their video ids, predicted RGB targets and metadata."""

    submission: torch.Tensor            # uint8 [N, H, W]
    video_ids: list[int]
    split: str | None
    frames: torch.Tensor | None = None  # uint8 [N, K, 3, h, w]
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def targets(self) -> list[int]:
        return [int(t) for t in self.meta.get("targets") or [TARGET_FRAME]]


def _load_tensor(path: Path) -> torch.Tensor:
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torn file, pickle refused, not a torch file
        raise UserError(f"{path}: not a readable torch tensor file ({type(error).__name__}); "
                        f"re-run `python main.py --exp predict` to rewrite it.") from error
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{path}: holds a {type(value).__name__}, not a tensor; re-run --exp predict.")
    return value


def _load_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not readable JSON ({error}); re-run --exp predict.") from error
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object; re-run --exp predict.")
    return value


def load_predictions(folder: str | Path) -> Predictions:
    """Read and check a predictions folder; a UserError names the file at fault."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"predictions folder '{folder}' does not exist; pass a `--exp predict` run folder with "
                        f"--config_mod eval.predictions=results/predict_<id>_<data>_<seed>")
    for required in ("submission.pt", "video_ids.json"):
        if not (folder / required).is_file():
            raise UserError(f"{folder / required} is missing; is '{folder}' a finished `--exp predict` run?")
    submission = _load_tensor(folder / "submission.pt")
    if submission.dim() != 3 or submission.dtype != torch.uint8:
        raise UserError(f"{folder / 'submission.pt'}: expected uint8 masks [N, H, W], got "
                        f"{submission.dtype} {tuple(submission.shape)}.")
    ids_record = _load_json(folder / "video_ids.json")
    video_ids = [int(v) for v in ids_record.get("video_ids", [])]
    if len(video_ids) != len(submission):
        raise UserError(f"{folder / 'video_ids.json'} lists {len(video_ids)} videos but submission.pt holds "
                        f"{len(submission)} masks; re-run --exp predict.")
    meta = _load_json(folder / "meta.json") if (folder / "meta.json").is_file() else {}
    frames = _load_tensor(folder / "frames.pt") if (folder / "frames.pt").is_file() else None
    predictions = Predictions(submission, video_ids, ids_record.get("split"), frames, meta, str(folder))
    _check_frames(predictions, folder / "frames.pt")
    return predictions


def _check_frames(predictions: Predictions, path: Path) -> None:
    frames = predictions.frames
    if frames is None:
        return
    n, k = len(predictions.video_ids), len(predictions.targets)
    if frames.dim() != 5 or frames.shape[:3] != (n, k, 3) or frames.dtype != torch.uint8:
        raise UserError(f"{path}: expected uint8 [{n}, {k}, 3, h, w] (one RGB frame per video and per "
                        f"meta.json target {predictions.targets}), got {frames.dtype} {tuple(frames.shape)}.")
