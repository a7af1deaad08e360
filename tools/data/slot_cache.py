"""Slot trajectories of a split, computed once from its masks and cached: what stage 2 of the slot route trains on.

Per video: states [22, 48, 7] (models/slots.py) and per-frame object codes [22, 48, 64] (8 x 8 templates,
tools/diffusion/slot_frames.py), about 100 KB, so thousands of trajectories fit in memory and a training
step reads no PNG and no mask. The cache lives in `<results>/slot_cache/` (the dataset is never written to)
and is rebuilt when the split's video ids or mask files change.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from models.slots import mask_states
from tools.core.atomic import torch_save_atomic
from tools.core.errors import UserError
from tools.data.classes import NUM_CLASSES
from tools.data.clevrer import list_videos, read_mask
from tools.diffusion.slot_frames import frame_codes

CACHE_VERSION = 2
CODE_LEVELS = 255  # codes are occupancies in [0, 1], stored as uint8


def _fingerprint(entries: list) -> str:
    """Video ids and mask file sizes and times: a changed split gets a new cache."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for entry in entries:
        stat = (Path(entry.path) / "mask.npy").stat()
        digest.update(f"{entry.id}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def video_slots(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(states [T, 48, 7] float32, codes [T, 48, 64] uint8) of one video's class-id masks [T, H, W]."""
    states = mask_states(masks[None], NUM_CLASSES)
    codes = frame_codes(masks[None], states)
    return states[0], (codes[0] * CODE_LEVELS).round().to(torch.uint8)


def build_slot_cache(root: str | Path, split: str, cache_dir: str | Path, progress: bool = True) -> Path:
    """The cache file of a labeled split (built if missing or stale); a UserError if the split has no masks."""
    entries = [e for e in list_videos(root, split) if e.has_mask]
    if not entries:
        raise UserError(f"split '{split}' of {root} holds no video with mask.npy; the slot route's stage 2 "
                        f"trains on labeled (or generated) videos: check --data_path and data.labeled_splits")
    name = hashlib.sha1(str(Path(root).resolve() / split).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"{split}_{name}_{_fingerprint(entries)}.pt"
    if path.is_file():
        return path
    states, codes = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-video tensors are small: extra threads only contend (3x slower measured)
    try:
        for entry in tqdm(entries, desc=f"slot states of {split}", disable=not progress, dynamic_ncols=True):
            video_states, video_codes = video_slots(read_mask(entry.path).long())
            states.append(video_states)
            codes.append(video_codes)
    finally:
        torch.set_num_threads(threads)
    torch_save_atomic({"version": CACHE_VERSION, "video_ids": [e.id for e in entries],
                       "states": torch.stack(states), "codes": torch.stack(codes)}, path)
    return path


class SlotTrajectories(Dataset):
    """Cached slot trajectories of one or more splits: items {'states' [T, 48, 7], 'codes' [T, 48, 64] float}."""

    def __init__(self, paths: list[Path]) -> None:
        parts = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
        self.states = torch.cat([p["states"] for p in parts])
        self.codes = torch.cat([p["codes"] for p in parts])
        self.video_ids = [v for p in parts for v in p["video_ids"]]

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"states": self.states[index], "codes": self.codes[index].float() / CODE_LEVELS,
                "video_id": torch.tensor(self.video_ids[index])}


def slot_trajectories(sources: list[tuple[str | Path, str]], cache_dir: str | Path, progress: bool = True
                      ) -> SlotTrajectories:
    """The cached trajectories of (dataset root, split) pairs (building what is missing). A masks-only
    dataset (mask.npy without frames, `--exp generate` with masks_only) is a valid source."""
    return SlotTrajectories([build_slot_cache(root, split, cache_dir, progress) for root, split in sources])
