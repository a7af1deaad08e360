"""Markdown of an evaluation report, and the one number formatter every table of the project uses."""
from __future__ import annotations

import math
from typing import Any

from evals.scoring.baselines import BASELINE_LABELS


def format_number(value: Any, digits: int = 4) -> str:
    """A finite float with `digits` decimals; None as '-'; anything else as str."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def report_markdown(report: dict[str, Any], title: str = "Evaluation") -> str:
    """The report as a markdown document: metric table, baselines, best/worst classes, notes."""
    meta = report.get("meta") or {}
    lines = [f"# {title}", "", f"predictions: `{report.get('predictions')}`; split `{report['split']}`, "
             f"{report['num_videos']} videos; strategy {meta.get('strategy', '?')}, "
             f"{meta.get('n_samples', '?')} samples, {format_number(meta.get('sec_per_video', '?'), 2)} s/video", "",
             "| metric | value |", "|---|---|"]
    jaccard = report.get("jaccard")
    if jaccard:
        lines += [f"| frame-22 Jaccard (competition, all masks stacked) | {format_number(jaccard['score'])} |",
                  f"| frame-22 Jaccard, mean over videos | {format_number(jaccard['mean_over_videos'])} |"]
    frame22 = report.get("frame22") or {}
    size = "x".join(map(str, frame22.get("resolution", [])))
    for key, label in (("lpips", f"LPIPS ({frame22.get('lpips_net')}) frame 22"), ("psnr", "PSNR frame 22 (dB)"),
                       ("ssim", "SSIM frame 22")):
        if key in frame22:
            lines.append(f"| {label} at {size} | {format_number(frame22[key])} |")
    if "fvd" in report:
        fvd = report["fvd"]
        frames = fvd["frames"]
        lines.append(f"| FVD frames {frames[0]}-{frames[-1]} ({fvd['num_videos']} videos) | {format_number(fvd['fvd'], 2)} |")
    if report.get("baselines"):
        lines += ["", "| baseline | frame-22 Jaccard |", "|---|---|"]
        lines += [f"| {BASELINE_LABELS.get(k, k)} | {format_number(v)} |" for k, v in report["baselines"].items()]
    if jaccard:
        for key, label in (("best_classes", "best classes"), ("worst_classes", "worst classes")):
            lines += ["", f"{label} (IoU): " + ", ".join(f"{name} {format_number(iou, 3)}" for name, iou in jaccard[key])]
    if report.get("notes"):
        lines += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"
