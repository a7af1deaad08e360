"""Write a generated dataset in the competition folder format, in parallel and resumably.

Layout written under the data root (ids continue across splits: train, val, unlabeled, hidden):

    train/video_<id>/image_0.png .. image_<T-1>.png, mask.npy   (T, H, W) uint8 class ids
    val/video_<id>/...                                          same as train
    unlabeled/video_<id>/image_*.png                            no mask
    hidden/video_<id>/image_0.png .. image_<K-1>.png            observed frames (K = hidden_frames)
    hidden_truth/video_<id>.npy                                 full (T, H, W) mask, hidden video
    hidden_masks.pt                                             (N, H, W) uint8 last-frame masks of
                                                                the hidden split, natural id order
    generator.yaml                                              settings the root was made with

Every video depends only on (seed, video id), never on the worker count or the order of work.
Each video is written into a `.tmp-` folder and renamed when complete, so an interrupted run
leaves no half-written video; re-running skips finished videos and deletes the leftovers.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image
from tqdm import tqdm

from tools.core.atomic import atomic_path, save_npy_atomic, write_text_atomic
from tools.core.errors import UserError
from tools.generator.scene import GeneratorSettings, SceneSpec, sample_scene
from tools.generator.settings import SPLITS, settings_from_config

LABELED_SPLITS = ("train", "val")
TEMP_PREFIX = ".tmp-"
SETTINGS_FILE = "generator.yaml"
HIDDEN_TRUTH_DIR = "hidden_truth"
HIDDEN_MASKS_FILE = "hidden_masks.pt"
# Settings that do not change what is written, so a root may be resumed with other values.
NON_CONTENT_KEYS = ("workers",)
NON_CONTENT_RENDER_KEYS = ("gl",)


# ----------------------------------------------------------------------------------------------
# Settings recorded in a root
# ----------------------------------------------------------------------------------------------
def _content_settings(settings: GeneratorSettings) -> dict:
    """The settings that determine the written files (compared when resuming a root)."""
    content = OmegaConf.to_container(OmegaConf.structured(settings))
    for key in NON_CONTENT_KEYS:
        content.pop(key)
    for key in NON_CONTENT_RENDER_KEYS:
        content["render"].pop(key)
    return content


def _claim_root(root: Path, settings: GeneratorSettings) -> None:
    """Record the settings in the root, refusing a root made with different ones."""
    path = root / SETTINGS_FILE
    wanted = _content_settings(settings)
    if path.exists():
        found = OmegaConf.to_container(OmegaConf.load(path))
        if found != wanted:
            raise UserError(f"{path} records different generator settings than requested, so "
                            "resuming would mix two datasets. Use a new --data_path, or the "
                            "settings recorded in that file.")
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(wanted)), TEMP_PREFIX)
    except OSError as error:
        raise UserError(f"Cannot write the dataset to {root} ({error}); pass a writable "
                        "--data_path.") from error


# ----------------------------------------------------------------------------------------------
# Planning and rendering one video
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoJob:
    split: str
    video_id: int


def plan_videos(settings: GeneratorSettings) -> list[VideoJob]:
    """All videos of the dataset, ids continuing from one split to the next."""
    jobs, next_id = [], 0
    for split in SPLITS:
        count = getattr(settings.counts, split)
        jobs.extend(VideoJob(split, next_id + i) for i in range(count))
        next_id += count
    return jobs


def scene_for(settings: GeneratorSettings, video_id: int) -> SceneSpec:
    """The scene of a video: a function of (seed, video id) alone."""
    return sample_scene(np.random.default_rng([settings.seed, video_id]), settings)


def render_video(settings: GeneratorSettings, video_id: int, with_rgb: bool = True
                 ) -> tuple[np.ndarray | None, np.ndarray]:
    """RGB frames (T, H, W, 3) (None without `with_rgb`) and masks (T, H, W), uint8, of one video.

    The calling process must have run `render.configure_process` before importing mujoco.
    """
    from tools.generator.render import simulate_and_render

    return simulate_and_render(scene_for(settings, video_id), settings, with_rgb=with_rgb)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def video_dir(root: Path, job: VideoJob) -> Path:
    return root / job.split / f"video_{job.video_id}"


def hidden_truth_path(root: Path, video_id: int) -> Path:
    return root / HIDDEN_TRUTH_DIR / f"video_{video_id}.npy"


def video_done(root: Path, job: VideoJob) -> bool:
    """Whether a video (and, for hidden videos, its truth mask) was completely written."""
    done = video_dir(root, job).is_dir()
    if job.split == "hidden":
        done = done and hidden_truth_path(root, job.video_id).is_file()
    return done


def write_video(root: Path, settings: GeneratorSettings, job: VideoJob) -> None:
    """Render one video and write it atomically in its split's format."""
    rgb, masks = render_video(settings, job.video_id, with_rgb=not settings.masks_only)
    final = video_dir(root, job)
    temp = final.with_name(TEMP_PREFIX + final.name)
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir(parents=True)
    frames = 0 if rgb is None else settings.hidden_frames if job.split == "hidden" else settings.frames
    for index in range(frames):
        Image.fromarray(rgb[index]).save(temp / f"image_{index}.png", format="PNG")
    if job.split in LABELED_SPLITS:
        np.save(temp / "mask.npy", masks)
    if job.split == "hidden":  # the truth first: a hidden video folder implies its truth exists
        save_npy_atomic(hidden_truth_path(root, job.video_id), masks, TEMP_PREFIX)
    if final.exists():  # a hidden video whose truth was missing: rewrite both
        shutil.rmtree(final)
    os.replace(temp, final)


def clean_temporaries(root: Path) -> int:
    """Delete what an interrupted run left half-written; returns how many entries went."""
    removed = 0
    for folder in [root / split for split in SPLITS] + [root / HIDDEN_TRUTH_DIR, root]:
        if not folder.is_dir():
            continue
        for entry in folder.glob(TEMP_PREFIX + "*"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed += 1
    return removed


def write_hidden_masks(root: Path, settings: GeneratorSettings) -> Path | None:
    """Stack the hidden videos' last-frame masks, natural id order, into hidden_masks.pt."""
    import torch

    hidden = [job for job in plan_videos(settings) if job.split == "hidden"]
    if not hidden:
        return None
    last_frames = [np.load(hidden_truth_path(root, job.video_id))[-1] for job in hidden]
    path = root / HIDDEN_MASKS_FILE
    with atomic_path(path, TEMP_PREFIX) as temp:
        torch.save(torch.from_numpy(np.stack(last_frames)), temp)
    return path


# ----------------------------------------------------------------------------------------------
# Parallel driver
# ----------------------------------------------------------------------------------------------
_worker_settings: GeneratorSettings | None = None
_worker_root: Path | None = None


def _init_worker(backend: str, settings: GeneratorSettings, root: str | None) -> None:
    from tools.generator.render import configure_process

    global _worker_settings, _worker_root
    configure_process(backend)
    _worker_settings = settings
    _worker_root = Path(root) if root is not None else None


def _write_job(job: VideoJob) -> VideoJob:
    write_video(_worker_root, _worker_settings, job)
    return job


def _render_job(job: tuple[int, bool]) -> tuple[int, np.ndarray | None, np.ndarray]:
    video_id, with_rgb = job
    rgb, masks = render_video(_worker_settings, video_id, with_rgb)
    return video_id, rgb, masks


def worker_pool(settings: GeneratorSettings, workers: int, root: Path | None = None):
    """A pool of fresh (spawned) processes set up for offscreen rendering."""
    from tools.generator.render import select_gl_backend

    backend = select_gl_backend(settings.render.gl)
    context = multiprocessing.get_context("spawn")  # a fresh process: MUJOCO_GL not yet read
    return context.Pool(workers, initializer=_init_worker,
                        initargs=(backend, settings, None if root is None else str(root)))


def render_videos(settings: GeneratorSettings, video_ids: list[int], workers: int = 1,
                  with_rgb: bool = True):
    """Yield (video_id, rgb, masks) for the given ids, rendered in worker processes, in order
    (rgb is None without `with_rgb`)."""
    with worker_pool(settings, workers) as pool:
        yield from pool.imap(_render_job, [(video_id, with_rgb) for video_id in video_ids])


def generate_dataset(cfg, out_root: str | os.PathLike, workers: int | None = None) -> dict:
    """Generate (or finish generating) a dataset under `out_root`; returns a small summary."""
    settings = settings_from_config(cfg)
    workers = settings.workers if workers is None else workers
    if workers < 1:
        raise UserError(f"workers={workers}: must be at least 1")
    root = Path(out_root)
    _claim_root(root, settings)
    removed = clean_temporaries(root)
    for split in SPLITS:
        (root / split).mkdir(exist_ok=True)
    jobs = plan_videos(settings)
    pending = [job for job in jobs if not video_done(root, job)]
    if pending:
        with worker_pool(settings, min(workers, len(pending)), root) as pool:
            progress = tqdm(pool.imap_unordered(_write_job, pending), total=len(pending),
                            desc=f"generate {root}", unit="video")
            for _ in progress:
                pass
    write_hidden_masks(root, settings)
    return {"videos": len(jobs), "written": len(pending), "skipped": len(jobs) - len(pending),
            "temporaries_removed": removed}


def run_generate(cfg, data_path: str) -> None:
    """Entry point of `main.py --exp generate --data_path D`."""
    if not data_path:
        raise UserError("--exp generate needs --data_path: the folder to write the dataset to.")
    summary = generate_dataset(cfg, data_path)
    print(f"Generated {summary['written']} videos ({summary['skipped']} already there, "
          f"{summary['temporaries_removed']} leftovers removed) in {data_path}")
