"""What stage 2 reads of each clip from the frozen first stage: motion latents of every frame and per-frame context
features (static latents of any observed set follow from them cheaply), optionally kept in memory per clip.

The first stage is frozen and clips are not augmented, so a clip always encodes to the same tensors: with
`train.cache_latents` each clip is encoded the first time it is drawn and read back afterwards. On a CPU, encoding
is most of a stage-2 step (on the embedded footage: ~80% of it), so this makes stage 2 several times faster after
the first epoch; on a GPU with UCF-101 (far too large to keep) it stays off and clips are encoded every step.
"""
from __future__ import annotations

from typing import Hashable

import torch


def clip_key(batch: dict, index: int) -> Hashable | None:
    """A clip's identity in the dataset: (video path, first frame) for natural video, the video id for CLEVRER."""
    if "path" in batch and "start" in batch:
        return str(batch["path"][index]), int(batch["start"][index])
    if "video_id" in batch:
        return "video", int(batch["video_id"][index])
    return None


class ClipLatents:
    """encode(batch, frames) -> (motion [B,T,Cm,h,w] float32, context features [B,T,Cc,h,w] or None)."""

    def __init__(self, first_stage: torch.nn.Module, cond_frames: int, keep: bool) -> None:
        self.first_stage, self.cond_frames, self.keep = first_stage, int(cond_frames), bool(keep)
        self.has_static = hasattr(first_stage, "context_features")
        self.stored: dict[Hashable, tuple[torch.Tensor, torch.Tensor | None]] = {}

    @torch.no_grad()
    def _encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        motion = self.first_stage.encode(frames, frames[:, : self.cond_frames]).motion.float()
        features = self.first_stage.context_features(frames) if self.has_static else None
        return motion, features

    def encode(self, batch: dict, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        keys = [clip_key(batch, i) for i in range(frames.shape[0])] if self.keep else []
        if not self.keep or any(key is None for key in keys):
            return self._encode(frames)
        missing = [i for i, key in enumerate(keys) if key not in self.stored]
        if missing:
            motion, features = self._encode(frames[missing])
            for row, i in enumerate(missing):
                # Copies in the compact dtype: a view would keep the whole batch's tensor alive.
                self.stored[keys[i]] = (motion[row].clone(),
                                        features[row].to(torch.bfloat16).clone() if features is not None else None)
        motion = torch.stack([self.stored[key][0] for key in keys]).to(frames.device)
        if not self.has_static:
            return motion, None
        features = torch.stack([self.stored[key][1] for key in keys]).to(frames.device, torch.float32)
        return motion, features
