"""Shared fixtures: a tiny synthetic dataset in the competition folder format (moving coloured squares)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared (real samples, metric fixtures); the test fails, never skips, when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: these tests need the shared folder beside the checkout "
                    f"(../shared with data/real_samples and fixtures/)", pytrace=False)
    return path


@pytest.fixture
def real_samples() -> Path:
    """../shared/data/real_samples: 3 labeled train and 3 unlabeled real videos."""
    return shared_path("data", "real_samples")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The suite's tensors are tiny: one intra-op thread avoids oversubscribing a 2-core machine, which made
    small convolutions several times slower whenever anything else ran beside the tests."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
SPLITS = {"train": 3, "val": 2, "unlabeled": 2, "hidden": 2}


def _render_video(rng: np.random.Generator, height: int = 160, width: int = 240):
    """22 frames of 2-3 squares moving in straight lines over a grey floor, with their class-id masks."""
    frames = np.full((22, height, width, 3), 90, np.uint8)
    masks = np.zeros((22, height, width), np.uint8)
    count = rng.integers(2, 4)
    ids = rng.choice(np.arange(1, 49), size=count, replace=False)
    for class_id in ids:
        colour = rng.integers(40, 255, size=3)
        size = int(rng.integers(14, 28))
        y, x = rng.uniform(10, height - 40), rng.uniform(10, width - 40)
        vy, vx = rng.uniform(-2, 2), rng.uniform(-3, 3)
        for t in range(22):
            top = int(np.clip(y + vy * t, 0, height - size))
            left = int(np.clip(x + vx * t, 0, width - size))
            frames[t, top:top + size, left:left + size] = colour
            masks[t, top:top + size, left:left + size] = class_id
    return frames, masks


def write_synthetic_dataset(root: Path, seed: int = 0, splits: dict[str, int] = SPLITS) -> Path:
    rng = np.random.default_rng(seed)
    video_id = 0
    for split, count in splits.items():
        write_synthetic_videos(root, split, range(video_id, video_id + count), rng)
        video_id += count
    return root


def write_synthetic_videos(root: Path, split: str, ids, rng: np.random.Generator) -> Path:
    """Videos with the given ids in one split (11 frames in hidden, masks in train and val)."""
    for video_id in ids:
        frames, masks = _render_video(rng)
        folder = root / split / f"video_{video_id}"
        folder.mkdir(parents=True)
        n_frames = 11 if split == "hidden" else 22
        for t in range(n_frames):
            Image.fromarray(frames[t]).save(folder / f"image_{t}.png")
        if split in ("train", "val"):
            np.save(folder / "mask.npy", masks)
    return root


@pytest.fixture(scope="session")
def synthetic_clevrer(tmp_path_factory) -> Path:
    """A read-only tiny dataset: train 3, val 2, unlabeled 2, hidden 2 videos at 160x240."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic_clevrer"))


# Overrides that make the tiny stage-2 config run in seconds on a CPU (32x48 frames).
TINY_DDPM = ["data.height=32", "data.width=48", "model.base_channels=8", "train.log_every=1",
             "train.sample_every=2", "train.ckpt_every=2", "train.scale_batches=1", "train.val_clips=1",
             "diffusion.sample_steps=2"]


def make_first_stage_checkpoint(path: Path, height: int = 32, width: int = 48) -> Path:
    """An untrained tiny first stage saved as `--exp first_stage` would (its quality is not the point)."""
    from models.first_stage import build_first_stage
    from tools.core.checkpoint import save_checkpoint

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/autoencoder/tiny.yaml")
    cfg.model.channels, cfg.data.height, cfg.data.width = 8, height, width
    cfg.run = {"exp": "first_stage"}
    torch.manual_seed(0)
    model = build_first_stage(cfg)
    save_checkpoint({"model": model.state_dict(), "step": 0, "config": OmegaConf.to_container(cfg)}, path)
    return path


def make_segmenter_checkpoint(path: Path) -> Path:
    """An untrained shallow segmenter saved as `--exp segment` would (its quality is not the point)."""
    from tools.predict.segmenter_io import build_task_segmenter
    from tools.core.checkpoint import save_checkpoint

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/segmentation/tiny.yaml")
    torch.manual_seed(0)
    model = build_task_segmenter(cfg.model)
    save_checkpoint({"model": model.state_dict(), "step": 0, "config": OmegaConf.to_container(cfg)}, path)
    return path


def run_ddpm(data: Path, results: Path, run_id: str, first_model, steps: int, *mods: str) -> int:
    import main

    return main.main(["--exp", "ddpm", "--id", run_id, "--pretrain_config", "configs/latent-diffusion/tiny.yaml",
                      "--data_path", str(data), "--results_dir", str(results), "--first_model", str(first_model),
                      "--batch_size", "2", "--config_mod", f"train.max_steps={steps}", *TINY_DDPM, *mods])


@pytest.fixture(scope="session")
def tiny_ddpm_checkpoint(synthetic_clevrer, tmp_path_factory) -> Path:
    """model_last.pth of a 1-step latent --exp ddpm run on the synthetic dataset (32x48)."""
    results = tmp_path_factory.mktemp("ddpm_results")
    first = make_first_stage_checkpoint(results / "first_stage.pth")
    assert run_ddpm(synthetic_clevrer, results, "fixture", first, 1) == 0
    return results / "ddpm_fixture_CLEVRER_42" / "model_last.pth"
