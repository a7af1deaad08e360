"""Compare how objects look in generated and real frames, per material: what a segmenter trained on generated
frames has to transfer.

Figures, from the true masks of labeled videos (objects of at least `--min_pixels` pixels, every third frame):
- colour: object mean RGB fitted as gain x palette colour + offset (0..255) over all objects of the material
  (tools/data/classes.py COLOR_RGB); the generator's base colours are set from this fit;
- spread: the median over objects of the standard deviation of pixel brightness within the object (real metal
  about twice real rubber: a mirror's contrast);
- highlight: the median over objects of the 95th brightness percentile minus the median;
- floor: the median brightness of background pixels, and of the darkest hundredth of them (shadows).

Usage:
    python -m tools.generator.calibrate_look --generated results/data/quickstart      # D/val (else D/train) vs real
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tools.core.errors import UserError
from tools.data.classes import COLOR_RGB, COLORS, MATERIALS, class_indices
from tools.data.clevrer import list_videos
from tools.data.validate import MASK_FILE, decode_png, frame_file, load_mask_file

REAL_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_samples" / "train"


def labeled_video_dirs(path: Path, limit: int) -> list[Path]:
    """The first `limit` labeled video folders of a dataset root (its val/, else train/) or of a split folder."""
    if not path.is_dir():
        raise UserError(f"{path} is not a folder: pass a dataset root with val/ or train/, or a split folder.")
    if (path / "val").is_dir() or (path / "train").is_dir():
        root, split = path, "val" if (path / "val").is_dir() else "train"
    else:
        root, split = path.parent, path.name
    dirs = [entry.path for entry in list_videos(root, split) if entry.has_mask]
    if not dirs:
        raise UserError(f"{root / split} holds no labeled video folders (video_*/mask.npy); pass a split folder or "
                        "a dataset root with val/ or train/.")
    return dirs[:limit]


def object_samples(video_dirs: list[Path], min_pixels: int = 80, frame_step: int = 3
                   ) -> tuple[list[dict], list[np.ndarray]]:
    """Per object and sampled frame: material, palette colour, mean RGB, brightness spread and highlight;
    and the background brightness of each sampled frame."""
    objects, floors = [], []
    for video in video_dirs:
        masks = load_mask_file(video / MASK_FILE)
        for frame in range(0, len(masks), frame_step):
            rgb = decode_png(video / frame_file(frame)).astype(np.float64)
            brightness = rgb.mean(axis=2)
            floors.append(brightness[masks[frame] == 0])
            for cid in np.unique(masks[frame]):
                pixels = masks[frame] == cid
                if cid == 0 or pixels.sum() < min_pixels:
                    continue
                _, material, colour = class_indices(int(cid))
                lum = brightness[pixels]
                objects.append(dict(material=MATERIALS[material], palette=np.asarray(COLOR_RGB[COLORS[colour]]),
                                    mean=rgb[pixels].mean(axis=0), spread=lum.std(),
                                    highlight=np.percentile(lum, 95) - np.median(lum)))
    return objects, floors


def look_figures(objects: list[dict], floors: list[np.ndarray]) -> dict[str, float]:
    figures = {}
    for material in MATERIALS:
        chosen = [o for o in objects if o["material"] == material]
        figures[f"{material} objects"] = float(len(chosen))
        if len(chosen) < 2:
            continue
        palette = np.concatenate([o["palette"] for o in chosen]).astype(np.float64)
        mean = np.concatenate([o["mean"] for o in chosen])
        gain, offset = np.polyfit(palette, mean, 1)
        figures[f"{material} colour gain"] = float(gain)
        figures[f"{material} colour offset"] = float(offset)
        figures[f"{material} brightness spread"] = float(np.median([o["spread"] for o in chosen]))
        figures[f"{material} highlight"] = float(np.median([o["highlight"] for o in chosen]))
    background = np.concatenate(floors)
    figures["floor brightness"] = float(np.median(background))
    figures["darkest hundredth of the floor"] = float(np.percentile(background, 1))
    return figures


def markdown(real: dict[str, float], generated: dict[str, float]) -> str:
    lines = ["| figure | real | generated |", "|---|---|---|"]
    for key in dict.fromkeys([*real, *generated]):
        cells = [f"{d[key]:.2f}" if key in d else "-" for d in (real, generated)]
        lines.append(f"| {key} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", required=True, help="generated dataset root (its val/, else train/) or a "
                        "split folder")
    parser.add_argument("--real", default=str(REAL_DEFAULT), help="real labeled videos (a split folder)")
    parser.add_argument("--videos", type=int, default=40, help="generated videos to read")
    parser.add_argument("--min_pixels", type=int, default=80, help="smaller objects (slivers) are left out")
    args = parser.parse_args(argv)
    real = look_figures(*object_samples(labeled_video_dirs(Path(args.real), 1000), args.min_pixels))
    generated = look_figures(*object_samples(labeled_video_dirs(Path(args.generated), args.videos), args.min_pixels))
    table = markdown(real, generated)
    print(table)
    return table


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        raise SystemExit(f"error: {error}")
