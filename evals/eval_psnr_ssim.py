#!/usr/bin/env python
"""PSNR (dB) and SSIM per frame between two images or the same-named frames of two folders.

    python evals/eval_psnr_ssim.py pred_frames/ true_frames/ [--per_file]

Frames are read as 8-bit RGB and scaled to [0, 1] (data range 1). Prints the means; identical
frames have infinite PSNR, which makes the mean infinite too.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import argparse  # noqa: E402

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from evals.metrics.image import SSIM_WINDOW, paired_image_files, psnr, read_image, ssim  # noqa: E402
from tools.core.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="image file or folder of frames")
    parser.add_argument("b", help="image file or folder of frames (paired with a by file name)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--per_file", action="store_true", help="also print each pair's PSNR and SSIM")
    return parser.parse_args(argv)


def psnr_ssim_of_pairs(pairs: list[tuple[Path, Path]], device: torch.device) -> list[tuple[float, float]]:
    """(PSNR, SSIM) of each (a, b) file pair, in order."""
    scores = []
    for a, b in tqdm(pairs, desc="PSNR/SSIM", unit="frame", disable=len(pairs) < 100):
        image_a, image_b = read_image(a)[None].to(device), read_image(b)[None].to(device)
        if image_a.shape != image_b.shape:
            raise UserError(f"{a} is {tuple(image_a.shape[2:])} but {b} is {tuple(image_b.shape[2:])}; "
                            f"PSNR/SSIM compare frames of one size.")
        if min(image_a.shape[2:]) < SSIM_WINDOW:
            raise UserError(f"{a}: frames of {tuple(image_a.shape[2:])} are smaller than SSIM's "
                            f"{SSIM_WINDOW}x{SSIM_WINDOW} window.")
        scores.append((psnr(image_a, image_b).item(), ssim(image_a, image_b).item()))
    return scores


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        pairs = paired_image_files(args.a, args.b)
        scores = psnr_ssim_of_pairs(pairs, torch.device(args.device))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.per_file:
        for (a, _), (psnr_db, ssim_value) in zip(pairs, scores):
            print(f"{a.name}\tpsnr_db {psnr_db:.4f}\tssim {ssim_value:.6f}")
    print(f"frames: {len(scores)}")
    print(f"psnr_db: {sum(s[0] for s in scores) / len(scores):.4f}")
    print(f"ssim: {sum(s[1] for s in scores) / len(scores):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
