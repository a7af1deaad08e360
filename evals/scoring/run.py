"""`python main.py --exp eval`: score a `--exp predict` run folder against the dataset's truth.

  python main.py --exp eval --data_path D --config_mod eval.predictions=results/predict_main_CLEVRER_42

Reads the predictions folder (submission.pt, video_ids.json, meta.json, optionally frames.pt) and reports
the frame-22 Jaccard (competition score over all masks stacked, mean per video, best and worst classes),
LPIPS, PSNR and SSIM of the predicted frame 22 against the true frame 22 resized to the predicted
resolution, FVD of the predicted target frames when there are at least 9 of them, and the baselines of
evals/scoring/baselines.py on the same videos. Writes eval.json and eval.md into results/eval_{id}_{data}_{seed}/
and prints the table. Without --data_path, the data path recorded in the predictions' config.yaml is used.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from evals.scoring.baselines import (SplitVideos, baseline_table, frame22_truth, has_true_frame,
                             split_videos)
from evals.scoring.report import report_markdown
from evals.metrics.jaccard import jaccard_report
from evals.scoring.predictions_folder import Predictions, load_predictions
from tools.core.atomic import write_text_atomic
from tools.data.classes import TARGET_FRAME, class_name
from tools.data.clevrer import read_frames, resize_frames
from tools.core.errors import UserError
from tools.core.runs import prepare_run_dir
from tools.core.distributed import DistContext, barrier

METRICS = ("jaccard", "lpips", "psnr_ssim", "fvd")
FVD_MIN_FRAMES = 9


# ----------------------------------------------------------------------------- metric sections

@dataclass
class EvalSettings:
    """The `eval` config section, checked."""

    metrics: tuple[str, ...] = METRICS
    lpips_net: str = "alex"
    batch_size: int = 8
    device: torch.device = torch.device("cpu")
    baselines: bool = True
    tta: bool = False
    suppress_min_pixels: int = 5
    per_class_rows: int = 5
    fvd_cache_dir: Path | None = None
    progress: bool = True

    @classmethod
    def from_config(cls, section: DictConfig, device: torch.device, results_dir: str | Path) -> "EvalSettings":
        metrics = tuple(str(m) for m in section.get("metrics") or ())
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise UserError(f"eval.metrics: unknown {unknown}; choose from {list(METRICS)}.")
        return cls(metrics=metrics, lpips_net=str(section.get("lpips_net", "alex")),
                   batch_size=int(section.get("batch_size", 8)), device=device,
                   baselines=bool(section.get("baselines", True)), tta=bool(section.get("tta", False)),
                   suppress_min_pixels=int(section.get("suppress_min_pixels", 5)),
                   per_class_rows=int(section.get("per_class_rows", 5)),
                   fvd_cache_dir=Path(results_dir) / "fvd_cache")


def jaccard_section(submission: torch.Tensor, truth: torch.Tensor, settings: EvalSettings) -> dict[str, Any]:
    """Competition score, mean per video, and the best and worst classes by IoU (by name)."""
    report = jaccard_report(submission, truth, device=settings.device)
    # Only classes in the truth or the prediction: a class absent from both has no IoU to rank.
    occurring = set(torch.unique(submission).tolist()) | set(torch.unique(truth).tolist())
    present = [(class_name(i), float(iou)) for i, iou in enumerate(report.per_class)
               if i in occurring and not np.isnan(iou)]
    ranked = sorted(present, key=lambda item: -item[1])
    rows = settings.per_class_rows
    return {"score": report.score, "mean_over_videos": report.mean_over_videos, "num_videos": report.num_videos,
            "per_class": dict(present), "best_classes": ranked[:rows], "worst_classes": ranked[::-1][:rows]}


def true_frames(videos: SplitVideos, indices: list[int], size: tuple[int, int]) -> Iterator[torch.Tensor]:
    """uint8 [T, 3, h, w] true frames of each video, resized to the predicted resolution."""
    for entry in videos.entries:
        frames = resize_frames(read_frames(entry.path, indices), size)
        yield frames.mul(255).round().to(torch.uint8)


def image_section(predicted: torch.Tensor, videos: SplitVideos, settings: EvalSettings) -> dict[str, Any]:
    """LPIPS, PSNR and SSIM of predicted frames 22 (uint8 [N, 3, h, w]) against the true ones."""
    from evals.metrics.image import psnr, ssim
    from evals.metrics.lpips import LPIPS

    size = tuple(predicted.shape[-2:])
    truth = torch.cat(list(true_frames(videos, [TARGET_FRAME], size)))
    section: dict[str, Any] = {"resolution": list(size)}
    if "psnr_ssim" in settings.metrics:
        section["psnr"] = float(psnr(predicted, truth).clamp(max=100.0).mean())
        if min(size) >= 11:
            section["ssim"] = float(ssim(predicted, truth).mean())
    if "lpips" in settings.metrics:
        started = time.perf_counter()
        network = LPIPS(settings.lpips_net).to(settings.device)
        distances = []
        for start in range(0, len(predicted), settings.batch_size):
            as_signed = lambda x: (x[start:start + settings.batch_size].to(settings.device).float() / 127.5 - 1)  # noqa: E731
            with torch.no_grad():
                distances.append(network(as_signed(predicted), as_signed(truth)).cpu())
        section["lpips"] = float(torch.cat(distances).mean())
        section["lpips_net"] = settings.lpips_net
        section["lpips_seconds"] = round(time.perf_counter() - started, 3)
    return section


def fvd_cache_name(videos: SplitVideos, targets: list[int], size: tuple[int, int]) -> str:
    """A cache file name unique to the dataset folder, the videos, the frame indices and the resolution."""
    key = json.dumps([str(videos.root.resolve()), videos.split, videos.video_ids, targets, list(size)])
    return f"{videos.split}_{len(videos.entries)}v_{len(targets)}f_{size[0]}x{size[1]}_" \
           f"{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def fvd_section(predicted: torch.Tensor, targets: list[int], videos: SplitVideos,
                settings: EvalSettings) -> dict[str, Any]:
    """FVD of predicted target frames (uint8 [N, K, 3, h, w]) against the true frames at the same indices."""
    from evals.metrics.fvd import compute_fvd

    size = tuple(predicted.shape[-2:])
    started = time.perf_counter()
    real = (frames[None] for frames in true_frames(videos, targets, size))
    score = compute_fvd(predicted, real, device=settings.device, batch_size=settings.batch_size,
                        real_cache_dir=settings.fvd_cache_dir, real_cache_name=fvd_cache_name(videos, targets, size),
                        progress=settings.progress)
    return {"fvd": score, "frames": [t + 1 for t in targets], "num_videos": len(predicted),
            "seconds": round(time.perf_counter() - started, 3)}


def evaluate_predictions(predictions: Predictions, videos: SplitVideos, settings: EvalSettings,
                         segmenter: torch.nn.Module | None = None) -> dict[str, Any]:
    """Every metric the predictions and the split allow, with a note for each one skipped."""
    report: dict[str, Any] = {"split": videos.split, "num_videos": len(videos.entries), "meta": predictions.meta,
                              "predictions": predictions.source, "notes": []}
    notes = report["notes"]
    truth = frame22_truth(videos, progress=settings.progress)
    if truth is not None and truth.shape != predictions.submission.shape:
        raise UserError(f"{predictions.source}/submission.pt holds masks {tuple(predictions.submission.shape)} but "
                        f"the true frame-22 masks of split '{videos.split}' are {tuple(truth.shape)}; predict at "
                        f"the dataset's resolution (one [H, W] mask per video).")
    if "jaccard" in settings.metrics:
        if truth is None:
            notes.append(f"no Jaccard: split '{videos.split}' has no true frame-22 masks.")
        else:
            report["jaccard"] = jaccard_section(predictions.submission, truth, settings)
    report.update(_rgb_sections(predictions, videos, settings, notes))
    if settings.baselines and truth is not None:
        report["baselines"] = baseline_table(videos.root, videos.split, segmenter, videos.video_ids,
                                             settings.batch_size, settings.tta, settings.suppress_min_pixels,
                                             settings.device, settings.progress, truth=truth)
        if segmenter is None:
            notes.append("baselines from segmented frames need eval.segmenter (a --exp segment checkpoint).")
        if not report["baselines"]:
            notes.append("no baseline scored: copying the true frame 11 needs the true masks of frames 1-11 "
                         "(mask.npy, or hidden_truth/ of a generated dataset).")
    return report


def _rgb_sections(predictions: Predictions, videos: SplitVideos, settings: EvalSettings,
                  notes: list[str]) -> dict[str, Any]:
    wanted_image = {"lpips", "psnr_ssim"} & set(settings.metrics)
    if not wanted_image and "fvd" not in settings.metrics:
        return {}
    if predictions.frames is None:
        notes.append("no LPIPS/PSNR/SSIM/FVD: the predictions folder has no frames.pt.")
        return {}
    sections: dict[str, Any] = {}
    targets = predictions.targets
    if not all(has_true_frame(entry, max(targets)) for entry in videos.entries):
        notes.append(f"no LPIPS/PSNR/SSIM/FVD: split '{videos.split}' has no true frames {[t + 1 for t in targets]}.")
        return {}
    if wanted_image:
        if TARGET_FRAME in targets:
            sections["frame22"] = image_section(predictions.frames[:, targets.index(TARGET_FRAME)], videos, settings)
        else:
            notes.append(f"no frame-22 image metrics: predicted targets {targets} omit frame 22.")
    if "fvd" in settings.metrics:
        if len(targets) < FVD_MIN_FRAMES:
            notes.append(f"no FVD: {len(targets)} predicted frame(s); I3D needs at least {FVD_MIN_FRAMES}.")
        else:
            if len(videos.entries) < 2:
                notes.append("FVD over one video uses the mean term only (no covariance).")
            sections["fvd"] = fvd_section(predictions.frames, targets, videos, settings)
    return sections


# ----------------------------------------------------------------------------- the stage

def _data_path(cfg: DictConfig, predictions_folder: Path) -> str:
    """The dataset the predictions were made from; --data_path must name that same folder when given (video
    ids of two datasets may match while their videos differ)."""
    saved = predictions_folder / "config.yaml"
    recorded = OmegaConf.select(OmegaConf.load(saved), "run.data_path") if saved.is_file() else None
    given = cfg.run.get("data_path")
    if given and recorded and Path(str(given)).resolve() != Path(str(recorded)).resolve():
        raise UserError(f"--data_path {given} is not the dataset the predictions were made from ({recorded}, "
                        f"recorded in {saved}); pass --data_path {recorded}, or predict on {given} first.")
    if given or recorded:
        return str(given or recorded)
    raise UserError("no dataset to evaluate against: pass --data_path (the folder the predictions were made "
                    f"from); {saved} records none.")


def _split(section: DictConfig, predictions: Predictions) -> str:
    wanted = section.get("split")
    if wanted and predictions.split and wanted != predictions.split:
        raise UserError(f"eval.split={wanted} but {predictions.source}/video_ids.json says the predictions are "
                        f"of split '{predictions.split}'; drop eval.split or evaluate the matching predictions.")
    return str(wanted or predictions.split or "val")


def _segmenter(section: DictConfig, predictions: Predictions, device: torch.device) -> torch.nn.Module | None:
    checkpoint = section.get("segmenter") or predictions.meta.get("segmenter_checkpoint")
    if not checkpoint or not section.get("baselines", True):
        return None
    if not Path(checkpoint).is_file():
        raise UserError(f"segmenter checkpoint '{checkpoint}' does not exist; set eval.segmenter to a "
                        f"model_best.pth of --exp segment (or null to skip the segmenter baselines).")
    from tools.predict.segmenter_io import load_segmenter

    return load_segmenter(checkpoint, device)


def run_video(cfg: DictConfig, ctx: DistContext) -> int:
    """Natural video: score `--exp sample` folders (eval.samples) into one table (evals/scoring/video.py)."""
    from evals.scoring.video import evaluate_samples

    section = cfg.eval
    samples = [str(s) for s in (section.samples if not isinstance(section.samples, str) else [section.samples])]
    run_dir = prepare_run_dir(cfg, ctx)
    if ctx.is_main:
        rows, markdown = evaluate_samples(samples, _device(section, ctx), Path(cfg.run.results_dir) / "fvd_cache",
                                          int(section.get("batch_size", 8)), str(section.get("real_split", "test")),
                                          int(section.get("real_clips", 2048)), bool(section.get("baselines", True)),
                                          str(section.get("lpips_net", "alex")))
        write_outputs(run_dir, "eval_video", rows, markdown)
    barrier(ctx)
    return 0


def _device(section: DictConfig, ctx: DistContext) -> torch.device:
    return ctx.device if str(section.get("device", "auto")) == "auto" else torch.device(str(section.device))


def write_outputs(run_dir: Path, stem: str, payload: Any, markdown: str) -> None:
    """<stem>.json and <stem>.md, each written whole, and the table printed."""
    write_text_atomic(run_dir / f"{stem}.json", json.dumps(payload, indent=2, default=str) + "\n")
    write_text_atomic(run_dir / f"{stem}.md", markdown)
    print(markdown)
    print(f"wrote {run_dir / (stem + '.json')} and {run_dir / (stem + '.md')}")


def run(cfg: DictConfig, ctx: DistContext) -> int:
    """Evaluate on rank 0 (the metrics are cheap next to prediction); other ranks wait."""
    section = cfg.get("eval")
    if section is not None and section.get("samples"):
        return run_video(cfg, ctx)
    if section is None or not section.get("predictions"):
        raise UserError("nothing to evaluate: pass --config_mod eval.predictions=results/predict_<id>_<data>_<seed> "
                        "(a `--exp predict` run folder) or eval.samples=[results/sample_<id>_<data>_<seed>] "
                        "(`--exp sample` folders of natural video).")
    folder = Path(str(section.predictions))
    predictions = load_predictions(folder)
    root = _data_path(cfg, folder)
    videos = split_videos(root, _split(section, predictions), predictions.video_ids)
    device = _device(section, ctx)
    settings = EvalSettings.from_config(section, device, cfg.run.results_dir)
    run_dir = prepare_run_dir(cfg, ctx)
    if ctx.is_main:
        report = evaluate_predictions(predictions, videos, settings, _segmenter(section, predictions, device))
        write_outputs(run_dir, "eval", report, report_markdown(report, title=f"Evaluation of {folder.name}"))
    barrier(ctx)
    return 0
