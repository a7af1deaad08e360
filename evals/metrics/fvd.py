"""Frechet Video Distance with the StyleGAN-V protocol and the I3D port of evals/metrics/i3d_net.py.

Protocol (the one behind the published reference values, e.g. 8 all-zero vs 8 all-one videos of
30 frames at 64x64 -> 151.26): each frame is resized bilinearly (align_corners=False) so its
shorter side is 224, centre-cropped to 224x224 (a plain 224x224 resize for square frames), scaled
from [0,1] to [-1,1]; I3D's 400 Kinetics logits averaged over time are the features; the distance
is |mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)) in float64 with scipy.

Real-video statistics (mu, sigma, count) can be cached as .npz under a name the caller chooses,
so a dataset's features are computed once.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from scipy import linalg
from torch.nn import functional as F
from tqdm import tqdm

from evals.metrics.i3d_net import I3D, MIN_FRAMES
from tools.core.atomic import atomic_path
from tools.core.errors import UserError

I3D_RESOLUTION = 224
# Written into every cache file; a cache made under another protocol is refused, not reused.
PROTOCOL = "styleganv-i3d400-logits-224-v1"

VideoSource = torch.Tensor | Iterable[torch.Tensor]


def to_unit_range(videos: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] or float [0,1] videos -> float32 in [0,1]."""
    if videos.dtype == torch.uint8:
        return videos.float() / 255.0
    if not videos.is_floating_point():
        raise ValueError(f"videos must be uint8 or float in [0,1], got dtype {videos.dtype}")
    return videos.float()


def preprocess_for_i3d(videos: torch.Tensor, resolution: int = I3D_RESOLUTION) -> torch.Tensor:
    """[N,T,3,H,W] uint8 or float [0,1] -> [N,3,T,224,224] float in [-1,1] (StyleGAN-V)."""
    if videos.dim() != 5 or videos.shape[2] != 3:
        raise ValueError(f"videos must be [N,T,3,H,W], got {tuple(videos.shape)}")
    n, t, c, h, w = videos.shape
    frames = to_unit_range(videos).reshape(n * t, c, h, w)
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    frames = frames[:, :, top:top + resolution, left:left + resolution]
    frames = frames * 2.0 - 1.0
    return frames.reshape(n, t, c, resolution, resolution).permute(0, 2, 1, 3, 4).contiguous()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class I3DFeatures:
    """Turns batches of videos into [N,400] float64 FVD features on one device."""

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 8,
                 progress: bool = True) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_size = batch_size
        self.progress = progress
        self.network = I3D().to(self.device)

    @torch.no_grad()
    def __call__(self, videos: VideoSource, description: str = "I3D features") -> np.ndarray:
        features = []
        total = len(videos) if isinstance(videos, torch.Tensor) else None
        with tqdm(total=total, desc=description, unit="video", disable=not self.progress) as bar:
            for batch in self._batches(videos):
                if batch.shape[1] < MIN_FRAMES:
                    raise UserError(f"FVD needs videos of at least {MIN_FRAMES} frames, got {batch.shape[1]}.")
                # float32 even under autocast: FVD is sensitive to the feature precision.
                with torch.autocast(device_type=self.device.type, enabled=False):
                    logits = self.network(preprocess_for_i3d(batch.to(self.device)))
                features.append(logits.double().cpu().numpy())
                bar.update(len(batch))
        if not features:
            raise UserError("FVD got no videos: the video source is empty.")
        return np.concatenate(features)

    def _batches(self, videos: VideoSource) -> Iterable[torch.Tensor]:
        chunks = [videos] if isinstance(videos, torch.Tensor) else videos
        for chunk in chunks:
            for start in range(0, len(chunk), self.batch_size):
                yield chunk[start:start + self.batch_size]


@dataclass
class FeatureStats:
    """Mean, covariance and sample count of a set of FVD features."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> "FeatureStats":
        features = np.asarray(features, dtype=np.float64)
        mu = features.mean(axis=0)
        if len(features) < 2:  # one sample has no covariance; StyleGAN-V then uses the mean term alone
            sigma = np.zeros((features.shape[1], features.shape[1]))
        else:
            sigma = np.cov(features, rowvar=False)
        return cls(mu, sigma, len(features))

    def save(self, path: str | Path) -> None:
        """Write atomically (tools.core.atomic): a kill never leaves a torn cache file."""
        with atomic_path(path) as temp, open(temp, "wb") as handle:
            np.savez(handle, mu=self.mu, sigma=self.sigma, count=self.count, protocol=PROTOCOL)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        try:
            with np.load(path, allow_pickle=False) as stored:
                protocol = str(stored["protocol"])
                stats = cls(stored["mu"], stored["sigma"], int(stored["count"]))
        except (OSError, KeyError, ValueError) as error:
            raise UserError(f"{path}: unreadable FVD statistics cache ({error}); delete it to recompute.") from error
        if protocol != PROTOCOL:
            raise UserError(f"{path}: FVD cache made with protocol '{protocol}', not '{PROTOCOL}'; delete it.")
        return stats


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)), float64; imaginary noise dropped."""
    mean_term = float(np.square(a.mu - b.mu).sum())
    trace_term = float(np.trace(a.sigma + b.sigma - 2.0 * _covariance_root(a.sigma, b.sigma)))
    return mean_term + trace_term


def _covariance_root(sigma_a: np.ndarray, sigma_b: np.ndarray) -> np.ndarray:
    """Real part of sqrtm(S_a S_b); fewer samples than feature dims make the product singular,
    which scipy warns about but handles. If it yields non-finite values, retry with a small
    diagonal offset (the usual FID remedy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root, _ = linalg.sqrtm(sigma_a @ sigma_b, disp=False)
        if not np.isfinite(root).all():
            offset = np.eye(len(sigma_a)) * 1e-6
            root, _ = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset), disp=False)
    return np.real(root)


def cache_path(cache_dir: str | Path, name: str) -> Path:
    """Where the statistics named `name` live; names are restricted so they stay one file name."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise UserError(f"FVD cache name '{name}' may use only letters, digits, '_', '.', '-'.")
    return Path(cache_dir) / f"{name}.npz"


def cached_stats(videos: VideoSource, extractor: I3DFeatures, cache_dir: str | Path | None,
                 name: str | None) -> FeatureStats:
    """Statistics of `videos`, read from / written to `<cache_dir>/<name>.npz` when both are given."""
    path = cache_path(cache_dir, name) if cache_dir is not None and name is not None else None
    if path is not None and path.is_file():
        return FeatureStats.load(path)
    stats = FeatureStats.from_features(extractor(videos, description=f"I3D {name or 'videos'}"))
    if path is not None:
        stats.save(path)
    return stats


def compute_fvd(fake: VideoSource, real: VideoSource, device: str | torch.device | None = None,
                batch_size: int = 8, real_cache_dir: str | Path | None = None,
                real_cache_name: str | None = None, progress: bool = True,
                extractor: I3DFeatures | None = None) -> float:
    """FVD between two sets of [N,T,3,H,W] videos (uint8, or float in [0,1]).

    Each source is a tensor or an iterable of tensors (batches). With `real_cache_dir` and
    `real_cache_name`, the real statistics are read from the cache if present, else written there.
    """
    extractor = extractor or I3DFeatures(device, batch_size, progress)
    real_stats = cached_stats(real, extractor, real_cache_dir, real_cache_name)
    fake_stats = FeatureStats.from_features(extractor(fake, description="I3D generated"))
    return frechet_distance(fake_stats, real_stats)
