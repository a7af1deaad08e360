#!/usr/bin/env python
"""Score `--exp sample` folders: streamed FVD (StyleGAN-V protocol, I3D), LPIPS / PSNR / SSIM per generated frame,
and the copy-frame baselines of predict / interpolate mode, in one table.

    python evals/eval_video.py results/sample_pred_FOLDER_42 results/sample_gen_FOLDER_42
    python main.py --exp eval --data FOLDER --config_mod "eval.samples=[results/sample_pred_FOLDER_42]"

Generate mode is compared with the dataset's real clips of --real_split (statistics cached in --cache_dir per
dataset, split, frames and size); the conditioned modes with the very clips they observed. Writes
eval_video.json and eval_video.md into --out (default: beside the first folder) and prints the table.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import argparse  # noqa: E402

import torch  # noqa: E402

from evals.scoring.run import write_outputs  # noqa: E402
from evals.scoring.video import evaluate_samples  # noqa: E402
from tools.core.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", nargs="+", help="--exp sample run folders")
    parser.add_argument("--out", default=None, help="folder for eval_video.json/.md (default: <first>/../eval_video)")
    parser.add_argument("--real_split", default="test", help="generate mode: the split of real clips (train/test)")
    parser.add_argument("--real_clips", type=int, default=2048, help="generate mode: real clips, evenly spread")
    parser.add_argument("--cache_dir", default="results/fvd_cache", help="cached real FVD statistics")
    parser.add_argument("--no_baselines", action="store_true", help="skip the copy-frame rows")
    parser.add_argument("--lpips_net", default="alex", choices=["alex", "vgg"])
    parser.add_argument("--batch_size", type=int, default=8, help="videos per I3D batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows, markdown = evaluate_samples(args.samples, torch.device(args.device), Path(args.cache_dir),
                                          args.batch_size, args.real_split, args.real_clips, not args.no_baselines,
                                          args.lpips_net)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.samples[0]).resolve().parent / "eval_video"
    write_outputs(out, "eval_video", rows, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
