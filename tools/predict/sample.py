"""`--exp sample`: N videos from a stage-2 checkpoint in one mode (MCVD/FDM), streamed to disk and resumable.

  python main.py --exp sample --data UCF101 --data_path D --config_mod sample.ddpm=R/model_last.pth sample.mode=generate
  python main.py --exp sample --data FOLDER --data_path D --config_mod sample.ddpm=R/model_last.pth \
      sample.mode=predict sample.n=256 sample.n_frames=32        # 8 observed frames, 24 predicted (long video)

Modes: generate (nothing observed; scene and object latents from the static prior), predict (the first
sample.cond_frames frames of a real test clip observed), interpolate (every sample.interp_stride-th frame observed),
reconstruct (no sampling: real test clips through stage 1 alone, to score the autoencoder the same way).
Writes results/sample_{id}_{data}_{seed}/:
  shards/fake_00000.pt ...   uint8 [b, T, 3, H, W] per batch: the videos, observed frames included (real ones), so
                             FVD covers conditioning plus generated frames as MCVD reports it
  shards/real_00000.pt ...   predict/interpolate: the real clips the samples were conditioned on (the truth)
  videos/video_00000.mp4 ... the first sample.mp4 videos (H.264)
  grid.gif, grid.png         a quick look (conditioned modes: real above sampled)
  sample.json                mode, N, frames, observed/generated frames, the plan, sampler, steps, eta, seed, timings
Every shard is written whole (temporary name, then rename); re-running the command continues after the last one,
and only one batch is ever held in memory.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from tools.core.atomic import torch_save_atomic, write_text_atomic
from tools.core.distributed import DistContext, autocast, barrier
from tools.core.errors import UserError
from tools.core.media import tile_videos, to_uint8_frames, write_gif, write_mp4
from tools.core.runs import prepare_run_dir
from tools.diffusion.video_plans import Plan, mode_frames, plan_video

SHARD_DIR = "shards"


@dataclass
class SamplePlan:
    """What every video of the run gets: observed and generated frames, the steps, and its length."""

    mode: str
    n_frames: int
    observed: list[int]
    wanted: list[int]
    steps: Plan


def load_predictor(section: DictConfig, device: torch.device):
    from tools.predict.video_predictor import VideoPredictor

    path = section.get("ddpm")
    if not path:
        raise UserError("--exp sample needs a stage-2 checkpoint: --config_mod sample.ddpm=results/ddpm_<id>_<data>_"
                        "<seed>/model_last.pth")
    if not Path(str(path)).is_file():
        raise UserError(f"sample.ddpm={path}: no such file; pass the model_last.pth of an --exp ddpm run")
    predictor = VideoPredictor.from_checkpoint(str(path), device)
    diffusion = predictor.cfg.diffusion
    for key, name in (("sampler", "sampler"), ("steps", "sample_steps"), ("eta", "eta")):
        if section.get(key) is not None:
            diffusion[name] = section[key]
    if section.get("untrained"):
        predictor = predictor.with_random_weights(int(section.get("untrained_seed", 0)))
    return predictor


def make_plan(section: DictConfig, model_cfg: DictConfig) -> SamplePlan:
    """Frames observed and generated, and the steps, from the sample section and the checkpoint's config."""
    window = int(model_cfg.frames.n_frames)
    n_frames = int(section.get("n_frames") or window)
    cond = int(section.get("cond_frames") or model_cfg.data.cond_frames)
    mode = str(section.mode)
    observed, wanted = mode_frames(mode, n_frames, cond, int(section.get("interp_stride") or 2))
    if mode == "reconstruct":
        return SamplePlan(mode, n_frames, observed, wanted, [])
    steps = plan_video(observed, wanted, window, int(model_cfg.frames.n_obs_max), int(model_cfg.frames.n_tgt),
                       str(section.get("scheme") or "autoregressive"), int(section.get("keyframe_stride") or 2))
    return SamplePlan(mode, n_frames, observed, wanted, steps)


def real_clips(cfg: DictConfig, model_cfg: DictConfig, n_frames: int, split: str):
    """The dataset's clips of n_frames frames (the checkpoint's size, crop and stride; --data and --data_path)."""
    from tools.data.datasets import video_clips

    if cfg.run.data == "CLEVRER":
        raise UserError("--exp sample writes natural videos (--data UCF101 or FOLDER); for the competition's "
                        "frame-22 masks use --exp predict")
    if not cfg.run.get("data_path"):
        raise UserError("--exp sample in predict/interpolate mode needs --data_path: the real clips it observes")
    data_cfg = OmegaConf.create({"data": OmegaConf.to_container(model_cfg.data, resolve=True), "run": cfg.run})
    data_cfg.data.frames = n_frames
    return video_clips(data_cfg, split)


def clip_index(video: int, total: int, n_clips: int) -> int:
    """The real clip that video `video` of `total` observes: clips evenly spread over the split when there are more
    clips than videos (so every source video is represented), else every clip in turn, again and again (several
    samples per start, as MCVD averages)."""
    if total <= n_clips:
        return round(video * (n_clips - 1) / max(total - 1, 1))
    return video % n_clips


def shard_path(run_dir: Path, kind: str, index: int, suffix: str = ".pt") -> Path:
    return run_dir / SHARD_DIR / f"{kind}_{index:05d}{suffix}"


def sample_batch(predictor, plan: SamplePlan, real: torch.Tensor | None, count: int, generator: torch.Generator,
                 amp) -> torch.Tensor:
    """One batch of videos [count, T, 3, H, W] in [-1, 1]: observed frames real, the others generated."""
    if real is None:
        return predictor.sample_video(None, [], plan.wanted, plan.steps, generator, amp, batch=count)
    if plan.mode == "reconstruct":
        return predictor.reconstruct(real, amp)
    observed = real[:, plan.observed]
    generated = predictor.sample_video(observed, plan.observed, plan.wanted, plan.steps, generator, amp)
    video = real.clone()
    video[:, plan.wanted] = generated.to(video.dtype)
    return video


def as_uint8(videos: torch.Tensor) -> torch.Tensor:
    """[B, T, 3, H, W] in [-1, 1] -> uint8."""
    return ((videos.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def write_quick_look(run_dir: Path, plan: SamplePlan, section: DictConfig) -> None:
    """grid.gif / grid.png of the first sample.grid videos (real above sampled in conditioned modes) and the
    first sample.mp4 videos as mp4 files, read back from the shards."""
    wanted_grid, wanted_mp4, fps = int(section.grid), int(section.mp4), int(section.fps)
    fakes, reals, index = [], [], 0
    while len(fakes) < max(wanted_grid, wanted_mp4) and shard_path(run_dir, "fake", index).exists():
        fakes += list(torch.load(shard_path(run_dir, "fake", index), weights_only=True))
        if plan.observed:
            reals += list(torch.load(shard_path(run_dir, "real", index), weights_only=True))
        index += 1
    for number, video in enumerate(fakes[:wanted_mp4]):
        target = run_dir / "videos" / f"video_{number:05d}.mp4"
        if not target.exists():
            write_mp4(to_uint8_frames(video), target, fps=fps)
    tiles = [to_uint8_frames(v) for v in fakes[:wanted_grid]]
    if plan.observed:  # pairs: the real clip above its sample
        tiles = [t for pair in zip([to_uint8_frames(v) for v in reals[:wanted_grid]], tiles) for t in pair]
    if tiles:
        columns = min(len(tiles), 8 if not plan.observed else 2 * min(4, len(fakes[:wanted_grid])))
        grid = tile_videos(_marked(tiles, plan) if plan.observed else tiles, columns)
        write_gif(grid, run_dir / "grid.gif", fps=fps)
        from PIL import Image

        from tools.core.atomic import atomic_path

        with atomic_path(run_dir / "grid.png") as temp:
            Image.fromarray(np.concatenate(list(grid[:: max(len(grid) // 4, 1)][:4]), axis=0)).save(temp)


def _marked(tiles: list[np.ndarray], plan: SamplePlan) -> list[np.ndarray]:
    """Generated frames get a red border in the quick look, so observed and generated frames are told apart."""
    marked = []
    for number, tile in enumerate(tiles):
        tile = tile.copy()
        if number % 2 == 1:
            tile[plan.wanted, :2], tile[plan.wanted, -2:] = (220, 30, 30), (220, 30, 30)
            tile[plan.wanted, :, :2], tile[plan.wanted, :, -2:] = (220, 30, 30), (220, 30, 30)
        marked.append(tile)
    return marked


def record(run_dir: Path, section: DictConfig, plan: SamplePlan, predictor, cfg: DictConfig, count: int,
           seconds: float, real_starts: int | None) -> dict[str, Any]:
    diffusion = predictor.cfg.diffusion
    info = {"mode": plan.mode, "n": int(section.n), "written": count, "n_frames": plan.n_frames,
            "observed": plan.observed, "generated": plan.wanted, "plan": plan.steps, "scheme": str(section.scheme),
            "sampler": str(diffusion.sampler), "steps": int(diffusion.sample_steps),
            "eta": float(diffusion.get("eta", 0.0)), "seed": int(cfg.run.seed), "checkpoint": str(section.ddpm),
            "untrained": bool(section.get("untrained", False)), "data": cfg.run.data,
            "data_path": cfg.run.get("data_path"), "split": str(section.split), "real_clips": real_starts,
            "height": int(predictor.cfg.data.height), "width": int(predictor.cfg.data.width),
            "seconds_per_video": seconds / max(count, 1), "fps": int(section.fps),
            "data_config": OmegaConf.to_container(predictor.cfg.data, resolve=True)}
    write_text_atomic(run_dir / "sample.json", json.dumps(info, indent=2) + "\n")
    return info


def run(cfg: DictConfig, ctx: DistContext) -> int:
    section = cfg.sample
    if int(section.n) < 1 or int(section.batch_size) < 1:
        raise UserError(f"sample.n={section.n} and sample.batch_size={section.batch_size} must be 1 or more")
    predictor = load_predictor(section, ctx.device)
    plan = make_plan(section, predictor.cfg)
    clips = real_clips(cfg, predictor.cfg, plan.n_frames, str(section.split)) if plan.observed else None
    run_dir = prepare_run_dir(cfg, ctx)
    if ctx.is_main:
        sample_all(run_dir, section, plan, predictor, clips, cfg, ctx)
    barrier(ctx)
    return 0


def sample_all(run_dir: Path, section: DictConfig, plan: SamplePlan, predictor, clips, cfg: DictConfig,
               ctx: DistContext) -> dict[str, Any]:
    total, batch_size = int(section.n), int(section.batch_size)
    amp = lambda: autocast(ctx, "bf16")  # noqa: E731  (bf16 on GPU, nothing on the CPU)
    seconds, done = 0.0, 0
    n_shards = -(-total // batch_size)
    bar = tqdm(total=total, desc=f"sample {plan.mode}", unit="video", dynamic_ncols=True)
    for index in range(n_shards):
        count = min(batch_size, total - index * batch_size)
        timing = shard_path(run_dir, "fake", index, ".json")
        if timing.exists():  # written after its shard: the shard is complete
            seconds += json.loads(timing.read_text())["seconds"]
        else:
            real = None
            if clips is not None:
                items = [clips[clip_index(index * batch_size + k, total, len(clips))]["frames"] for k in range(count)]
                real = torch.stack(items).to(ctx.device) * 2 - 1
            generator = torch.Generator().manual_seed(int(cfg.run.seed) * 1_000_003 + index)
            started = time.perf_counter()
            videos = sample_batch(predictor, plan, real, count, generator, amp)
            elapsed = time.perf_counter() - started
            seconds += elapsed
            if real is not None:
                torch_save_atomic(as_uint8(real), shard_path(run_dir, "real", index))
            torch_save_atomic(as_uint8(videos), shard_path(run_dir, "fake", index))
            write_text_atomic(timing, json.dumps({"videos": count, "seconds": elapsed}) + "\n")
        done += count
        bar.update(count)
    bar.close()
    write_quick_look(run_dir, plan, section)
    info = record(run_dir, section, plan, predictor, cfg, done, seconds, len(clips) if clips is not None else None)
    print(f"wrote {done} {plan.mode} videos to {run_dir} ({info['seconds_per_video']:.2f} s per video)")
    return info
