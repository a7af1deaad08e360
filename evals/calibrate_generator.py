"""Compare generated videos with real ones on the statistics that matter for frame-22 prediction.

Figures, computed from the masks of labeled videos:
- object pixel area: quartiles over every (video, frame, object present);
- mean per-frame displacement of object centroids (pixels/frame), over objects present in two
  consecutive frames, and the share of those steps under half a pixel (objects standing still);
- share of videos gaining a class after frame 11 (objects entering unpredictably), and during
  the clip at all;
- frame-22 Jaccard of copying frame 11's mask (torchmetrics multiclass, 49 classes, over the
  stacked masks of all videos).

Usage:
    python -m evals.calibrate_generator                       # real samples vs 40 fresh videos
    python -m evals.calibrate_generator --generated D         # vs D/train and D/val masks
    python -m evals.calibrate_generator --videos 60 --config_mod scene.speed_max=2.5
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from natsort import natsorted
from omegaconf import OmegaConf
from torchmetrics.classification import MulticlassJaccardIndex

from tools.core.errors import UserError

REAL_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_samples"
OBSERVED_FRAMES = 11   # frames 1..11 are the model's input
STILL_PIXELS = 0.5


@dataclass
class VideoFigures:
    areas: list[int]
    displacements: list[float]
    gains_after_observed: bool
    gains_any: bool
    copy_jaccard: float


def _present(mask: np.ndarray) -> set[int]:
    return set(np.unique(mask).tolist()) - {0}


def _centroids(mask: np.ndarray) -> dict[int, np.ndarray]:
    return {c: np.argwhere(mask == c).mean(0) for c in _present(mask)}


def copy_frame_jaccard(masks: np.ndarray) -> float:
    """Jaccard of copying frame 11 as the last frame; masks (N, T, H, W) or (T, H, W)."""
    masks = masks[None] if masks.ndim == 3 else masks
    metric = MulticlassJaccardIndex(num_classes=49)
    pred = torch.from_numpy(masks[:, OBSERVED_FRAMES - 1].astype(np.int64))
    target = torch.from_numpy(masks[:, -1].astype(np.int64))
    return float(metric(pred, target))


def video_figures(masks: np.ndarray) -> VideoFigures:
    """The calibration figures of one video's (T, H, W) class-id masks."""
    areas = [int((frame == c).sum()) for frame in masks for c in _present(frame)]
    displacements = []
    previous = _centroids(masks[0])
    for frame in masks[1:]:
        current = _centroids(frame)
        displacements += [float(np.linalg.norm(current[c] - previous[c]))
                          for c in current.keys() & previous.keys()]
        previous = current
    observed = set().union(*(_present(f) for f in masks[:OBSERVED_FRAMES]))
    later = set().union(*(_present(f) for f in masks[OBSERVED_FRAMES:]))
    return VideoFigures(areas, displacements, bool(later - observed),
                        bool(set().union(observed, later) - _present(masks[0])),
                        copy_frame_jaccard(masks))


def summarize(all_masks: list[np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """Each figure as (value over all videos, lowest per-video value, highest per-video value)."""
    per_video = [video_figures(m) for m in all_masks]

    def spread(values):
        return float(min(values)), float(max(values))

    def pooled(key, fn):
        pooled_values = [x for v in per_video for x in getattr(v, key)]
        return (fn(pooled_values), *spread([fn(getattr(v, key)) for v in per_video
                                            if getattr(v, key)]))

    stacked = np.stack(all_masks)
    return {
        "object area q25 (px)": pooled("areas", lambda a: float(np.percentile(a, 25))),
        "object area median (px)": pooled("areas", lambda a: float(np.median(a))),
        "object area q75 (px)": pooled("areas", lambda a: float(np.percentile(a, 75))),
        "objects per frame": (float(np.mean([len(_present(f)) for m in all_masks for f in m])),
                              *spread([np.mean([len(_present(f)) for f in m]) for m in all_masks])),
        "centroid displacement (px/frame)": pooled("displacements", lambda d: float(np.mean(d))),
        "share of still steps (<0.5 px)": pooled(
            "displacements", lambda d: float(np.mean(np.asarray(d) < STILL_PIXELS))),
        "videos gaining a class after frame 11": (
            float(np.mean([v.gains_after_observed for v in per_video])),
            *spread([float(v.gains_after_observed) for v in per_video])),
        "videos gaining a class after frame 1": (
            float(np.mean([v.gains_any for v in per_video])),
            *spread([float(v.gains_any) for v in per_video])),
        "copy-frame-11 Jaccard at frame 22": (copy_frame_jaccard(stacked),
                                              *spread([v.copy_jaccard for v in per_video])),
    }


def read_masks(root: Path, splits: tuple[str, ...] = ("train", "val")) -> list[np.ndarray]:
    """The mask.npy of every video folder in the given splits, natural order."""
    masks = []
    for split in splits:
        folder = root / split
        if folder.is_dir():
            for video in natsorted(p for p in folder.iterdir() if p.name.startswith("video_")):
                if (video / "mask.npy").is_file():
                    masks.append(np.load(video / "mask.npy"))
    if not masks:
        raise UserError(f"No mask.npy found under {root}/{{{','.join(splits)}}}/video_*: "
                        "pass a labeled dataset root (with train/ or val/ videos).")
    return masks


def generate_masks(count: int, config_mods: list[str], workers: int) -> list[np.ndarray]:
    """Masks of `count` freshly generated videos (ids 0..count-1) with the default config."""
    from tools.generator.generate import render_videos, settings_from_config

    config_path = Path(__file__).resolve().parents[1] / "configs" / "data" / "generate.yaml"
    cfg = OmegaConf.load(config_path) if config_path.is_file() else OmegaConf.create()
    settings = settings_from_config(OmegaConf.merge(cfg, OmegaConf.from_dotlist(config_mods)))
    return [masks for _, _, masks in render_videos(settings, list(range(count)), workers)]


def markdown_table(real: dict, generated: dict) -> str:
    lines = ["| figure | real (all) | real per-video range | generated (all) | "
             "generated per-video range | generated inside real range |",
             "|---|---|---|---|---|---|"]
    for name, (value, low, high) in real.items():
        g_value, g_low, g_high = generated[name]
        inside = "yes" if low - 1e-9 <= g_value <= high + 1e-9 else "no"
        lines.append(f"| {name} | {value:.3g} | {low:.3g} - {high:.3g} | {g_value:.3g} | "
                     f"{g_low:.3g} - {g_high:.3g} | {inside} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL_DEFAULT,
                        help="root of real labeled videos (train/video_*/mask.npy)")
    parser.add_argument("--generated", type=Path, default=None,
                        help="root of a generated dataset; default: generate --videos fresh ones")
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config_mod", nargs="*", default=[], help="generator key=value overrides")
    args = parser.parse_args(argv)
    real = summarize(read_masks(args.real, ("train",)))
    generated_masks = (read_masks(args.generated) if args.generated is not None
                       else generate_masks(args.videos, args.config_mod, args.workers))
    table = markdown_table(real, summarize(generated_masks))
    print(f"Real: {args.real} | generated: {len(generated_masks)} videos\n")
    print(table)
    return table


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        raise SystemExit(f"error: {error}")
