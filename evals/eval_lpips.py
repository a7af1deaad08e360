#!/usr/bin/env python
"""LPIPS between two images, or the mean over same-named frames of two folders.

    python evals/eval_lpips.py A.png B.png                 # prints the distance as its last line
    python evals/eval_lpips.py pred_frames/ true_frames/ --net vgg --device cuda
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import argparse  # noqa: E402

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from evals.metrics.image import paired_image_files, read_image  # noqa: E402
from evals.metrics.lpips import LPIPS  # noqa: E402
from tools.core.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="image file or folder of frames")
    parser.add_argument("b", help="image file or folder of frames (paired with a by file name)")
    parser.add_argument("--net", choices=["alex", "vgg"], default="alex", help="backbone (default alex, v0.1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--per_file", action="store_true", help="also print each pair's distance")
    return parser.parse_args(argv)


def _to_model_range(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 127.5 - 1.0


@torch.no_grad()
def lpips_of_pairs(pairs: list[tuple[Path, Path]], metric: LPIPS, device: torch.device,
                   batch_size: int) -> list[float]:
    """LPIPS of each (a, b) file pair, in order; pairs of one size are batched together."""
    distances: list[float] = []
    for start in tqdm(range(0, len(pairs), batch_size), desc="LPIPS", unit="batch", disable=len(pairs) <= batch_size):
        chunk = pairs[start:start + batch_size]
        images = [(read_image(a), read_image(b)) for a, b in chunk]
        for (a, b), (image_a, image_b) in zip(chunk, images):
            if image_a.shape != image_b.shape:
                raise UserError(f"{a} is {tuple(image_a.shape[1:])} but {b} is {tuple(image_b.shape[1:])}; "
                                f"LPIPS compares images of one size.")
        if len({image_a.shape for image_a, _ in images}) == 1:
            x = torch.stack([_to_model_range(a) for a, _ in images]).to(device)
            y = torch.stack([_to_model_range(b) for _, b in images]).to(device)
            distances += metric(x, y).tolist()
        else:
            distances += [metric(_to_model_range(a)[None].to(device), _to_model_range(b)[None].to(device)).item()
                          for a, b in images]
    return distances


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        pairs = paired_image_files(args.a, args.b)
        device = torch.device(args.device)
        distances = lpips_of_pairs(pairs, LPIPS(args.net).to(device), device, args.batch_size)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.per_file:
        for (a, _), distance in zip(pairs, distances):
            print(f"{a.name}\t{distance:.6f}")
    if len(pairs) > 1:
        print(f"mean LPIPS ({args.net}) over {len(pairs)} pairs:")
    print(f"{sum(distances) / len(distances):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
