#!/usr/bin/env python
"""Competition Jaccard of a submission against ground truth.

    python evals/eval_jaccard.py submission.pt --true data_root --split val
    python evals/eval_jaccard.py submission.pt --true true_masks.pt --per_class

The submission is a torch.save'd tensor (N, 160, 240) uint8, one frame-22 mask per video in natural
order of video id. Ground truth is a tensor file of the same shape, or a dataset root whose
<root>/<split>/video_*/mask.npy hold (22, H, W) masks; frame --frame (default 21, the 22nd) is used.
Prints per-class IoU (with --per_class), the mean over videos, then the competition score as the
last line.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import argparse  # noqa: E402

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from evals.metrics.jaccard import jaccard_report  # noqa: E402
from tools.data.classes import NUM_CLASSES, TARGET_FRAME, class_name  # noqa: E402
from tools.data.clevrer import list_videos, read_mask  # noqa: E402
from tools.core.errors import UserError  # noqa: E402



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", help="torch.save'd (N, H, W) uint8 predicted masks")
    parser.add_argument("--true", required=True, help="(N, H, W) tensor file, or a dataset root folder")
    parser.add_argument("--split", default="val", help="split of the dataset root to score against (default val)")
    parser.add_argument("--frame", type=int, default=TARGET_FRAME, help="mask frame index (default 21 = frame 22)")
    parser.add_argument("--device", default="cpu", help="device of the torchmetrics accumulation")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--per_class", action="store_true", help="print the IoU of every present class")
    return parser.parse_args(argv)


def load_mask_tensor(path: Path, flag: str) -> torch.Tensor:
    """A torch.save'd (N, H, W) integer mask tensor; a UserError naming the file otherwise."""
    if not path.is_file():
        raise UserError(f"{path} (given as {flag}): no such file.")
    try:
        masks = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise UserError(f"{path}: cannot load a tensor ({type(error).__name__}: {error}). "
                        f"Save masks with torch.save(tensor_uint8, path).") from None
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise UserError(f"{path}: expected a tensor (N, H, W) of class ids, got {shape}.")
    if masks.is_floating_point() or masks.dtype == torch.bool:
        raise UserError(f"{path}: masks have dtype {masks.dtype}; save them as uint8 class ids 0..48.")
    return masks


def masks_from_split(root: Path, split: str, frame: int) -> torch.Tensor:
    """Frame `frame` of every mask.npy of a split, in natural order of video folder."""
    entries = list_videos(root, split)
    if not entries:
        raise UserError(f"{root}/{split}: no video folders to score against.")
    unlabeled = [entry.path.name for entry in entries if not entry.has_mask]
    if unlabeled:
        raise UserError(f"{root}/{split}: {len(unlabeled)} videos have no mask.npy (e.g. {unlabeled[:3]}); "
                        f"score against a labeled split (train or val).")
    masks = []
    for entry in tqdm(entries, desc=f"masks {split}", unit="video", disable=len(entries) < 200):
        video_masks = read_mask(entry.path)
        if not 0 <= frame < len(video_masks):
            raise UserError(f"--frame {frame} is outside the {len(video_masks)} frames of {entry.path / 'mask.npy'}.")
        masks.append(video_masks[frame])
    return torch.stack(masks)


def ground_truth(true: str, split: str, frame: int) -> torch.Tensor:
    path = Path(true)
    if path.is_dir():
        return masks_from_split(path, split, frame)
    return load_mask_tensor(path, "--true")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        predicted = load_mask_tensor(Path(args.submission), "submission")
        true = ground_truth(args.true, args.split, args.frame)
        if len(predicted) != len(true):
            raise UserError(f"{args.submission} holds {len(predicted)} masks but the ground truth {args.true} "
                            f"has {len(true)}; one mask per video, in natural order of video id.")
        report = jaccard_report(predicted, true, args.batch_size, args.device)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lines = report.lines({index: class_name(index) for index in range(NUM_CLASSES)})
    per_class_rows, mean_over_videos = lines[:-2], lines[-2]
    if args.per_class:
        print("\n".join(per_class_rows))
    print(mean_over_videos)
    print("jaccard (all masks stacked, competition):")
    print(f"{report.score:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
