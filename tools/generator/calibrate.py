"""Compare generated videos with real ones on the statistics that matter for frame-22 prediction.

Figures, computed from the true masks of labeled videos (see tools/generator/motion_figures.py):
- object pixel area quartiles over every (video, frame, object present), objects per frame;
- mean per-frame centroid displacement (px/frame) and the share of steps under half a pixel;
- the median ratio of an object's speed 5 frames later to its speed now (objects moving faster than
  2 px/frame): real objects slide and decelerate, so constant velocity overshoots;
- the share of still objects that start moving (real ones do when another hits them);
- shares of videos gaining a class after frame 11 (unpredictable entries) and after frame 1;
- frame-22 Jaccard (competition metric over all videos stacked) of three predictors on true masks:
  copy frame 11, constant-velocity shift, and the true-displacement ceiling (evals/scoring/baselines.py),
  and how much constant velocity gains over copying.

Each figure passes when the generated value lies in a stated range around the real value: the
ranges set by issue 11 where it set one, otherwise the spread of the real videos' own values.

Usage:
    python -m tools.generator.calibrate                       # real samples vs 40 fresh videos
    python -m tools.generator.calibrate --generated D         # vs D/train and D/val masks
    python -m tools.generator.calibrate --videos 60 --config_mod scene.speed_max=2.5
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from natsort import natsorted
from omegaconf import OmegaConf

from evals.scoring.motion_baselines import motion_baseline_predictions
from evals.metrics.jaccard import jaccard_score, per_video_jaccard
from tools.generator.motion_figures import STILL_PIXELS, VideoFigures, video_figures
from tools.core.errors import UserError

REAL_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_samples"
CONFIG_DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "data" / "generate.yaml"

SPEED_RATIO = "speed 5 frames later / now (median, > 2 px/frame)"
DISPLACEMENT = "centroid displacement (px/frame)"
STILL_STARTED = "still objects that start moving"
COPY = "frame-22 Jaccard: copy frame 11"
CONSTANT_VELOCITY = "frame-22 Jaccard: constant velocity"
CEILING = "frame-22 Jaccard: true displacement (ceiling)"
VELOCITY_GAIN = "constant velocity minus copy Jaccard"

# Pass ranges stated around the real value: issue 11's for the speed ratio, displacement and the
# gain of constant velocity; DESIGN.md section 7's for the copy (roughly 0.2-0.4) and constant-
# velocity Jaccards (0.29-0.32 on six real videos, 0.335 on the three here; the spread of three
# videos alone is too narrow a range); the still-start share of the 11 real still objects is 0.45,
# so only a wide range is meaningful. Other figures use the spread of the real videos.
STATED_RANGES: dict[str, tuple[float, float]] = {
    SPEED_RATIO: (0.50, 0.68),
    DISPLACEMENT: (2.3, 3.4),
    VELOCITY_GAIN: (-np.inf, 0.04),
    STILL_STARTED: (0.25, 0.70),
    COPY: (0.20, 0.40),
    CONSTANT_VELOCITY: (0.25, 0.40),
}


@dataclass(frozen=True)
class Figure:
    value: float            # over all videos pooled
    low: float              # lowest and highest value of a single video
    high: float


def _pooled(per_video: list[VideoFigures], key: str, statistic) -> Figure:
    pooled = [x for v in per_video for x in getattr(v, key)]
    singles = [statistic(getattr(v, key)) for v in per_video if getattr(v, key)]
    if not pooled:
        return Figure(float("nan"), float("nan"), float("nan"))
    return Figure(float(statistic(pooled)), float(min(singles)), float(max(singles)))


def _share(numerators: list[float], denominators: list[float]) -> Figure:
    singles = [n / d for n, d in zip(numerators, denominators) if d]
    total = sum(denominators)
    if not total:
        return Figure(float("nan"), float("nan"), float("nan"))
    return Figure(sum(numerators) / total, min(singles), max(singles))


def predictor_figures(all_masks: list[np.ndarray]) -> dict[str, Figure]:
    """The three frame-22 predictors over all videos, with each video's own score for the spread."""
    labels = {COPY: "copy_frame11_truth", CONSTANT_VELOCITY: "constant_velocity_truth",
              CEILING: "true_displacement_truth"}
    predictions, truth = motion_baseline_predictions(all_masks)
    pooled = {key: jaccard_score(masks, truth) for key, masks in predictions.items()}
    singles = {key: per_video_jaccard(masks, truth) for key, masks in predictions.items()}
    figures = {label: Figure(pooled[key], float(singles[key].min()), float(singles[key].max()))
               for label, key in labels.items()}
    gains = singles["constant_velocity_truth"] - singles["copy_frame11_truth"]
    figures[VELOCITY_GAIN] = Figure(pooled["constant_velocity_truth"] - pooled["copy_frame11_truth"],
                                    float(gains.min()), float(gains.max()))
    return figures


def summarize(all_masks: list[np.ndarray]) -> dict[str, Figure]:
    """Every calibration figure of a set of videos' (T, H, W) masks."""
    per_video = [video_figures(m) for m in all_masks]
    videos = len(per_video)
    figures = {
        "object area q25 (px)": _pooled(per_video, "areas", lambda a: np.percentile(a, 25)),
        "object area median (px)": _pooled(per_video, "areas", np.median),
        "object area q75 (px)": _pooled(per_video, "areas", lambda a: np.percentile(a, 75)),
        "objects per frame": _share([v.objects_per_frame for v in per_video], [1.0] * videos),
        DISPLACEMENT: _pooled(per_video, "displacements", np.mean),
        f"share of still steps (<{STILL_PIXELS} px)": _pooled(
            per_video, "displacements", lambda d: np.mean(np.asarray(d) < STILL_PIXELS)),
        SPEED_RATIO: _pooled(per_video, "speed_ratios", np.median),
        STILL_STARTED: _share([v.still_started for v in per_video],
                              [v.still_objects for v in per_video]),
        "videos gaining a class after frame 11": _share(
            [float(v.gains_after_observed) for v in per_video], [1.0] * videos),
        "videos gaining a class after frame 1": _share(
            [float(v.gains_any) for v in per_video], [1.0] * videos),
    }
    figures.update(predictor_figures(all_masks))
    return figures


def pass_range(name: str, real: Figure) -> tuple[float, float, str]:
    """The range a generated figure must fall in, and where the range comes from."""
    if name in STATED_RANGES:
        return (*STATED_RANGES[name], "stated")
    return real.low, real.high, "real per-video"


def _range_text(low: float, high: float) -> str:
    return f"<= {high:.3g}" if low == -np.inf else f"{low:.3g} - {high:.3g}"


def markdown_table(real: dict[str, Figure], generated: dict[str, Figure]) -> str:
    """One row per figure: real value (and per-video spread), pass range, generated value, pass/fail."""
    lines = ["| figure | real (per-video range) | pass range (source) | generated | pass |",
             "|---|---|---|---|---|"]
    for name, figure in real.items():
        low, high, source = pass_range(name, figure)
        value = generated[name].value
        verdict = "pass" if low - 1e-9 <= value <= high + 1e-9 else "FAIL"
        lines.append(f"| {name} | {figure.value:.3g} ({figure.low:.3g} - {figure.high:.3g}) | "
                     f"{_range_text(low, high)} ({source}) | {value:.3g} | {verdict} |")
    return "\n".join(lines)


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
                        "pass a labeled dataset root (with train/ or val/ videos) to --real/--generated.")
    return masks


def generate_masks(count: int, config_mods: list[str], workers: int) -> list[np.ndarray]:
    """Masks of `count` freshly generated videos (ids 0..count-1), default config plus overrides."""
    from tools.generator.generate import render_videos
    from tools.generator.settings import settings_from_config

    cfg = OmegaConf.load(CONFIG_DEFAULT) if CONFIG_DEFAULT.is_file() else OmegaConf.create()
    settings = settings_from_config(OmegaConf.merge(cfg, OmegaConf.from_dotlist(config_mods)))
    return [masks for _, _, masks in render_videos(settings, list(range(count)), workers,
                                                   with_rgb=False)]


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
