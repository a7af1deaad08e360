"""Slot trajectories of a split, computed once from its masks and cached: what stage 2 of the slot route trains on.

Per video: states [22, 48, 7] (models/slots.py) and per-frame object codes [22, 48, 64] (8 x 8 templates,
tools/diffusion/slot_frames.py), about 100 KB, so thousands of trajectories fit in memory and a training
step reads no PNG and no mask. The cache lives in `<results>/slot_cache/` (the dataset is never written to);
when the split's videos change, only new or rewritten videos are computed.
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

CACHE_VERSION = 3
CODE_LEVELS = 255  # codes are occupancies in [0, 1], stored as uint8


def _video_key(entry) -> str:
    """A video's id and its mask file's size and time: a rewritten mask gets a new key."""
    stat = (Path(entry.path) / "mask.npy").stat()
    return f"{entry.id}:{stat.st_size}:{stat.st_mtime_ns}"


def _fingerprint(keys: list[str]) -> str:
    return hashlib.sha1(f"v{CACHE_VERSION};{';'.join(keys)}".encode()).hexdigest()[:16]


def _earlier_rows(cache_dir: Path, prefix: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Rows of earlier caches of the same split by video key, so a grown split only computes its new videos."""
    rows = {}
    for old in cache_dir.glob(f"{prefix}_*.pt"):
        try:
            cache = torch.load(old, map_location="cpu", weights_only=True)
        except Exception:  # a cache from another version or a torn file: computed again
            continue
        if cache.get("version") == CACHE_VERSION:
            rows.update({key: (s, c) for key, s, c in zip(cache["keys"], cache["states"], cache["codes"])})
    return rows


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
    prefix = f"{split}_{hashlib.sha1(str(Path(root).resolve() / split).encode()).hexdigest()[:12]}"
    keys = [_video_key(entry) for entry in entries]
    path = Path(cache_dir) / f"{prefix}_{_fingerprint(keys)}.pt"
    if path.is_file():
        return path
    earlier = _earlier_rows(Path(cache_dir), prefix)
    todo = [(key, entry) for key, entry in zip(keys, entries) if key not in earlier]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-video tensors are small: extra threads only contend (3x slower measured)
    try:
        for key, entry in tqdm(todo, desc=f"slot states of {split}", disable=not progress, dynamic_ncols=True):
            earlier[key] = video_slots(read_mask(entry.path).long())
    finally:
        torch.set_num_threads(threads)
    torch_save_atomic({"version": CACHE_VERSION, "video_ids": [e.id for e in entries], "keys": keys,
                       "states": torch.stack([earlier[k][0] for k in keys]),
                       "codes": torch.stack([earlier[k][1] for k in keys])}, path)
    for old in Path(cache_dir).glob(f"{prefix}_*.pt"):  # superseded by the one just written
        if old != path:
            old.unlink()
    return path


class SlotTrajectories(Dataset):
    """Cached slot trajectories of one or more splits: items {'states' [T, 48, 7], 'codes' [T, 48, 64] float}."""

    def __init__(self, paths: list[Path]) -> None:
        parts = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
        self.part_sizes = [len(p["states"]) for p in parts]  # trajectories per source, in the order given
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
