"""report.md of `--exp pipeline`: frame-22 Jaccard of the model against the baselines, a figure, timings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from evals.eval_report import format_number
from tools.core.atomic import write_text_atomic
from tools.data.classes import NUM_OBSERVED, TARGET_FRAME, colorize_mask
from tools.data.clevrer import read_frames, read_mask
from tools.core.logger import read_stats
from tools.predict.outputs import resized_uint8, save_png, uint8_hwc
from tools.core.runs import run_dir_for

FIGURE_VIDEOS = 4


def _last(records: list[dict], split: str, key: str) -> float | None:
    values = [r[key] for r in records if r.get("split") == split and r.get(key) is not None]
    return values[-1] if values else None


def write_figure(path: Path, entries: list, predict_dir: Path, submission: torch.Tensor) -> None:
    """Rows of videos: frames 1, 6, 11 | true frame 22 | predicted frame 22 | true mask | predicted mask."""
    frames_pred = torch.load(predict_dir / "frames.pt", weights_only=True)
    rows = []
    for index, entry in enumerate(entries[:FIGURE_VIDEOS]):
        frames = read_frames(entry.path, [0, NUM_OBSERVED // 2, NUM_OBSERVED - 1, TARGET_FRAME])
        predicted = resized_uint8(frames_pred[index, -1], tuple(frames.shape[-2:]))
        tiles = [uint8_hwc(f) for f in frames] + [uint8_hwc(predicted),
                                                  colorize_mask(read_mask(entry.path)[TARGET_FRAME].numpy()),
                                                  colorize_mask(submission[index].numpy())]
        rows.append(np.concatenate(tiles, axis=1))
    save_png(np.concatenate(rows, axis=0), path)


def jaccard_rows(data_path: Path, predict_dir: Path, segmenter: Path) -> tuple[list[tuple[str, float]], list]:
    """(name, frame-22 Jaccard) of the model and of the baselines, scored by evals/eval_run.py."""
    from evals.baselines import BASELINE_LABELS, split_videos
    from evals.eval_run import EvalSettings, evaluate_predictions
    from evals.predictions_folder import load_predictions
    from tools.predict.segmenter_io import load_segmenter

    predictions = load_predictions(predict_dir)
    videos = split_videos(data_path, predictions.split or "val", predictions.video_ids)
    settings = EvalSettings(metrics=("jaccard",), progress=False)
    report = evaluate_predictions(predictions, videos, settings, load_segmenter(segmenter))
    rows = [("latent diffusion model (this run)", float(report["jaccard"]["score"]))]
    rows += [(BASELINE_LABELS.get(name, name), value) for name, value in (report.get("baselines") or {}).items()]
    return rows, videos.entries


def write_report(run_dir: Path, data_path: Path, predict_dir: Path, segmenter: Path, steps: dict[str, DictConfig],
                 timings: dict[str, float]) -> Path:
    rows, entries = jaccard_rows(data_path, predict_dir, segmenter)
    submission = torch.load(predict_dir / "submission.pt", weights_only=True)
    write_figure(run_dir / "figure.png", entries, predict_dir, submission)
    meta = json.loads((predict_dir / "meta.json").read_text())
    stats = {name: read_stats(run_dir_for(cfg.run)) for name, cfg in steps.items() if name != "predict"}
    lines = [
        "# Pipeline report", "",
        f"Dataset: `{data_path}`, split `{meta['split']}` ({len(entries)} videos). Frames 1-11 observed, "
        f"frame 22 predicted; strategy `{meta['strategy']}`, {meta['n_samples']} samples per video, "
        f"fusion `{meta['fusion']}`, classes absent from frames 1-11 suppressed: {meta['suppress_absent']}.", "",
        "## Frame-22 Jaccard (49 classes, masks stacked as the competition scores)", "",
        "| method | Jaccard |", "|---|---|",
        *[f"| {name} | {format_number(value)} |" for name, value in rows], "",
        "![inputs, truth and prediction](figure.png)", "",
        "Figure: frames 1, 6, 11 | true frame 22 | predicted frame 22 | true mask | predicted mask.", "",
        "## Stages", "",
        "| stage | wall time | figures |", "|---|---|---|",
        f"| generate data | {_minutes(timings.get('generate'))} | (skipped when --data_path already held data) |",
        f"| segmenter | {_minutes(timings.get('segment'))} | best val Jaccard per frame "
        f"{format_number(max((r['jaccard'] for r in stats['segment'] if r.get('jaccard') is not None), default=None))} |",
        f"| stage 1 autoencoder | {_minutes(timings.get('first_stage'))} | val reconstruction PSNR "
        f"{format_number(_last(stats['first_stage'], 'val', 'recon_psnr'), 2)} dB, semantic-head mask IoU "
        f"{format_number(_last(stats['first_stage'], 'val', 'recon_mask_iou'))} |",
        f"| stage 2 diffusion | {_minutes(timings.get('ddpm'))} | last training loss "
        f"{format_number(_last(stats['ddpm'], 'train', 'loss'))} |",
        f"| predict | {_minutes(timings.get('predict'))} | {format_number(meta.get('sec_per_video'), 2)} s per video |",
        f"| total | {_minutes(timings.get('total'))} | |", "",
        "A stage that was already finished (a re-run) shows only the time to check it.",
    ]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"
