"""report.md of `--exp pipeline`: frame-22 Jaccard of the model against the baselines, a figure, timings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from evals.scoring.report import format_number
from evals.scoring.segmenter_scores import ROW_LABELS
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


MODEL_LABELS = {
    ("slots", "model"): "slot diffusion, segmenter masks of frames 1-11 (this run)",
    ("slots", "true_masks"): "slot diffusion, true masks of frames 1-11 (the dynamics alone)",
    ("slots", "guess"): "the motion head's guess alone, true masks of frames 1-11 (no diffusion samples)",
    ("grid", "model"): "grid-latent diffusion model (this run)",
}


def score_predictions(data_path: Path, predict_dir: Path, segmenter: Path | None) -> tuple[dict, list]:
    """evals/scoring/run.py's report (Jaccard, and the baselines when a segmenter is given) and the videos."""
    from evals.scoring.baselines import split_videos
    from evals.scoring.run import EvalSettings, evaluate_predictions
    from evals.scoring.predictions_folder import load_predictions
    from tools.predict.segmenter_io import load_segmenter

    predictions = load_predictions(predict_dir)
    videos = split_videos(data_path, predictions.split or "val", predictions.video_ids)
    settings = EvalSettings(metrics=("jaccard",), progress=False, baselines=segmenter is not None)
    report = evaluate_predictions(predictions, videos, settings, load_segmenter(segmenter) if segmenter else None)
    return report, videos.entries


def jaccard_rows(data_path: Path, predict_dirs: dict[str, Path], segmenter: Path, route: str,
                 classifier: Path | None = None, tta: bool = False) -> tuple[list[tuple[str, float]], list]:
    """(name, frame-22 Jaccard) of the model's prediction runs and of the baselines."""
    from evals.scoring.baselines import BASELINE_LABELS

    rows, baselines, entries = [], {}, []
    for index, (name, folder) in enumerate(predict_dirs.items()):
        report, videos = score_predictions(data_path, folder, segmenter if index == 0 else None)
        rows.append((MODEL_LABELS.get((route, name), name), float(report["jaccard"]["score"])))
        if index == 0:
            baselines, entries = report.get("baselines") or {}, videos
    rows += [(BASELINE_LABELS.get(name, name), value) for name, value in baselines.items()]
    return rows + segmenter_report_rows(data_path, predict_dirs, segmenter, classifier, tta), entries


def segmenter_report_rows(data_path: Path, predict_dirs: dict[str, Path], segmenter: Path,
                          classifier: Path | None = None, tta: bool = False) -> list[tuple[str, float]]:
    """The segmenter's own rows on the same videos: per-frame Jaccard with and without the instance vote (and with
    the object classifier in it, when given: the pseudo-labels' procedure), copy frame 11 with segmenter masks
    against true masks, and the friction rule on the segmenter masks (evals/scoring/segmenter_scores.py)."""
    from evals.scoring.predictions_folder import load_predictions
    from evals.scoring.segmenter_scores import segmenter_rows
    from tools.predict.instance_vote import load_vote_judge
    from tools.predict.segmenter_io import load_segmenter

    predictions = load_predictions(next(iter(predict_dirs.values())))
    judge = load_vote_judge({"object_classifier": str(classifier) if classifier else None})
    return segmenter_rows(load_segmenter(segmenter), data_path, predictions.split or "val", predictions.video_ids,
                          judge=judge, tta=tta)


def count_videos(folder: Path | None) -> int:
    return 0 if folder is None or not folder.is_dir() else sum(1 for p in folder.glob("video_*/mask.npy"))


def stage_lines(route: str, stats: dict[str, list], timings: dict[str, float], meta: dict,
                pseudo_labels: Path | None = None, submission: Path | None = None,
                pseudo_label_jaccard: float | None = None) -> list[str]:
    """The stage table: wall time and the figure each stage logged."""
    # Prediction uses each network's last weights, so the table shows their last val figure, not the best one.
    if route == "slots":
        first = (f"frame-22 Jaccard from the TRUE frame-22 states "
                 f"{format_number(_last(stats['first_stage'], 'val', 'frame22_true_state_jaccard'))}")
        second = (f"last training loss {format_number(_last(stats['ddpm'], 'train', 'loss'))}, val frame-22 "
                  f"Jaccard (true masks) {format_number(_last(stats['ddpm'], 'val', 'frame22_jaccard'))}")
    else:
        first = (f"val reconstruction PSNR {format_number(_last(stats['first_stage'], 'val', 'recon_psnr'), 2)} dB, "
                 f"semantic-head mask IoU {format_number(_last(stats['first_stage'], 'val', 'recon_mask_iou'))}")
        second = f"last training loss {format_number(_last(stats['ddpm'], 'train', 'loss'))}"
    lines = [f"| generate data | {_minutes(timings.get('generate'))} | (skipped when --data_path already held data) |"]
    if route == "slots":
        lines.append(f"| generate trajectories (masks only) | {_minutes(timings.get('trajectories'))} | |")
    lines.append(f"| segmenter | {_minutes(timings.get('segment'))} | last val Jaccard per frame (argmax) "
                 f"{format_number(_last(stats['segment'], 'val', 'jaccard'))} |")
    if stats.get("objects") is not None:
        lines.append(f"| object classifier | {_minutes(timings.get('objects'))} | last val accuracy per object "
                     f"crop (shape, material and colour right) "
                     f"{format_number(_last(stats['objects'], 'val', 'accuracy'))} |")
    if pseudo_labels is not None:
        lines.append(f"| pseudo-labels of the unlabeled split (frames 1-22) | {_minutes(timings.get('pseudo_labels'))} "
                     f"| {count_videos(pseudo_labels)} videos, used by stage 2 (`{pseudo_labels}`); the same procedure "
                     f"on the val videos: {format_number(pseudo_label_jaccard)} per frame |")
    hidden = [] if submission is None else [
        f"| predict the hidden split (the val row's settings) | {_minutes(timings.get('predict_hidden'))} | "
        f"`{submission}` ({_hidden_count(submission)} masks) |"]
    return lines + [
        f"| stage 1 ({route}) | {_minutes(timings.get('first_stage'))} | {first} |",
        f"| stage 2 diffusion ({route}) | {_minutes(timings.get('ddpm'))} | {second} |",
        f"| predict | {_minutes(timings.get('predict'))} | {format_number(meta.get('sec_per_video'), 2)} s per video |",
        *hidden, f"| total | {_minutes(timings.get('total'))} | |"]


def _hidden_count(submission: Path) -> int:
    return len(json.loads(submission.with_name("submission_ids.json").read_text())["video_ids"])


def write_report(run_dir: Path, data_path: Path, predict_dirs: dict[str, Path], segmenter: Path,
                 steps: dict[str, DictConfig], timings: dict[str, float], route: str = "slots",
                 classifier: Path | None = None, tta: bool = False, profile: str = "cpu",
                 pseudo_labels: Path | None = None, submission_path: Path | None = None) -> Path:
    """report.md (and figure.png) in run_dir; submission_path: the hidden split's published submission.pt."""
    rows, entries = jaccard_rows(data_path, predict_dirs, segmenter, route, classifier, tta)
    predict_dir = predict_dirs["model"]
    submission = torch.load(predict_dir / "submission.pt", weights_only=True)
    write_figure(run_dir / "figure.png", entries, predict_dir, submission)
    meta = json.loads((predict_dir / "meta.json").read_text())
    stats = {name: read_stats(run_dir_for(cfg.run)) for name, cfg in steps.items()}
    lines = [
        "# Pipeline report", "",
        f"Dataset: `{data_path}`, split `{meta['split']}` ({len(entries)} videos). Frames 1-11 observed, "
        f"frame 22 predicted; route `{route}`, strategy `{meta['strategy']}`, {meta['n_samples']} samples per "
        f"video, fusion `{meta['fusion']}`, classes absent from frames 1-11 suppressed: {meta['suppress_absent']}; "
        f"profile `{profile}`.",
        "", "## Frame-22 Jaccard (49 classes, masks stacked as the competition scores)", "",
        "| method | Jaccard |", "|---|---|",
        *[f"| {name} | {format_number(value)} |" for name, value in rows], "",
        "![inputs, truth and prediction](figure.png)", "",
        "Figure: frames 1, 6, 11 | true frame 22 | predicted frame 22 | true mask | predicted mask.", "",
        "## Stages", "", "| stage | wall time | figures |", "|---|---|---|",
        *stage_lines(route, stats, timings, meta, pseudo_labels, submission_path,
                     dict(rows).get(ROW_LABELS["per_frame_vote_objects"])), "",
        "A stage that was already finished (a re-run) shows only the time to check it.",
    ]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"
