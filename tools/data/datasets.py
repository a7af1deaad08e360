"""Which clips a stage trains and validates on, for each --data kind.

Stages 1 and 2 both want 22-frame clips at the config's resolution: labeled splits (with masks), optionally
the unlabeled split (masks unknown = -1, or pseudo-labels written by `--exp segment` mode=pseudo_label),
and a held-out split for validation that is never the training data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import ConcatDataset, Dataset, Subset

from tools.core.errors import UserError


class PseudoLabelled(Dataset):
    """Fills unknown masks of a dataset with pseudo-labels from <folder>/video_<id>/mask.npy when present."""

    def __init__(self, base: Dataset, folder: str | Path) -> None:
        self.base = base
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"pseudo-label folder '{self.folder}' does not exist; write it with "
                            f"`python main.py --exp segment --config_mod mode=pseudo_label ...` or unset "
                            f"data.pseudo_labels")

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = self.base[index]
        path = self.folder / f"video_{item['video_id']}" / "mask.npy"
        if bool(item["has_mask"]) or not path.exists():
            return item
        mask = torch.from_numpy(np.load(path)).long()
        if mask.shape[-2:] != item["frames"].shape[-2:]:
            from tools.data.clevrer import resize_mask

            mask = resize_mask(mask, tuple(item["frames"].shape[-2:]))
        return dict(item, mask=mask[: item["frames"].shape[0]], has_mask=torch.tensor(True))


def _size(cfg: DictConfig) -> tuple[int, int]:
    return int(cfg.data.height), int(cfg.data.width)


def _clevrer_split(root: str, split: str, cfg: DictConfig, frames: int | None = None) -> Dataset:
    from tools.data.clevrer import ClevrerDataset

    indices = range(frames) if frames else None
    return ClevrerDataset(root, split, frame_indices=indices, size=_size(cfg))


def _optional_int(value) -> int | None:
    return None if value is None else int(value)


def video_clips(cfg: DictConfig, split: str) -> Dataset:
    """Clips of a natural-video dataset (--data UCF101 or FOLDER) for split 'train' or 'test'.

    UCF-101: the official lists of fold data.fold ('train' may name several lists in data.train_lists).
    FOLDER: every video, or with data.test_fraction > 0 its first part ('train') or its last part ('test'),
    so train and test clips never share a frame (data.time_range: only that part of every video, for a tuning
    split apart from the reported test frames)."""
    from tools.data.video import UCF101Dataset, VideoFolderDataset

    data = cfg.data
    kwargs = dict(clip_len=int(data.frames), stride=int(data.get("frame_stride") or 1), size=_size(cfg),
                  clip_step=_optional_int(data.get("clip_step" if split == "train" else "test_clip_step")),
                  crop=str(data.get("crop") or "center"), cache=bool(data.get("cache_frames", False)))
    if cfg.run.data == "UCF101":
        fold = int(data.get("fold") or 1)
        lists = list(data.get("train_lists") or ["train"]) if split == "train" else ["test"]
        parts = [UCF101Dataset(cfg.run.data_path, split=name, fold=fold, **kwargs) for name in lists]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)
    fraction = float(data.get("test_fraction") or 0.0)
    include = data.get("include")
    include = [str(p) for p in include] if include is not None else None
    if fraction <= 0.0:
        if split != "train":
            raise UserError(f"--data FOLDER has no test clips: set data.test_fraction (e.g. 0.25) so the last part "
                            f"of every video in {cfg.run.data_path} is held out")
        return VideoFolderDataset(cfg.run.data_path, include=include, **kwargs)
    time_range = tuple(float(v) for v in (data.get("time_range") or (0.0, 1.0)))
    return VideoFolderDataset(cfg.run.data_path, include=include, time_split=split, test_fraction=fraction,
                              time_range=time_range, **kwargs)


def has_test_clips(cfg: DictConfig) -> bool:
    """Whether a natural-video dataset has held-out clips (UCF-101 always; a folder with data.test_fraction)."""
    return cfg.run.data == "UCF101" or float(cfg.data.get("test_fraction") or 0.0) > 0.0


def spread_subset(dataset: Dataset, count: int) -> Dataset:
    """`count` clips evenly spread over the dataset (not the first ones, which would all come from one video)."""
    total = len(dataset)
    if count >= total:
        return dataset
    return Subset(dataset, sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)}))


def training_clips(cfg: DictConfig) -> Dataset:
    """The training clips of the run's dataset (labeled + unlabeled splits for CLEVRER)."""
    if cfg.run.data != "CLEVRER":
        return video_clips(cfg, "train")
    root = str(cfg.run.data_path)
    parts = [_clevrer_split(root, split, cfg, int(cfg.data.frames)) for split in cfg.data.labeled_splits]
    for split in cfg.data.get("unlabeled_splits") or []:
        folder = Path(root) / split
        if not folder.is_dir() or not any(p.name.startswith("video_") for p in folder.iterdir()):
            print(f"note: no videos in the '{split}' split of {root}; training on labeled videos only")
            continue
        unlabeled = _clevrer_split(root, split, cfg, int(cfg.data.frames))
        pseudo = cfg.data.get("pseudo_labels")
        parts.append(PseudoLabelled(unlabeled, pseudo) if pseudo else unlabeled)
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def validation_clips(cfg: DictConfig, count: int) -> Dataset | None:
    """Up to `count` held-out clips (the val split for CLEVRER, the test clips of a video dataset), or None."""
    if cfg.run.data == "CLEVRER":
        split = cfg.data.get("val_split", "val")
        folder = Path(str(cfg.run.data_path)) / split
        if not folder.is_dir() or not any(p.name.startswith("video_") for p in folder.iterdir()):
            print(f"note: no videos in the '{split}' split of {cfg.run.data_path}; training without validation")
            return None
        dataset = _clevrer_split(str(cfg.run.data_path), split, cfg, int(cfg.data.frames))
    elif has_test_clips(cfg):
        return spread_subset(video_clips(cfg, "test"), count)
    else:
        return None
    return Subset(dataset, range(min(count, len(dataset))))
