"""Scores of `--exp sample` folders on natural video: streamed FVD, per-frame LPIPS / PSNR / SSIM, baselines.

- FVD (StyleGAN-V protocol, evals/metrics/fvd.py) of the sampled videos against real clips. Conditioned modes (predict,
  interpolate, reconstruct) compare with the very clips they observed (their `real_*` shards): the videos include
  the observed frames, so this is FVD over conditioning plus generated frames, as MCVD reports it. Generate mode
  compares with the dataset's clips of a split, whose statistics are cached per dataset, split, frames and size.
- Shards are read one at a time and only I3D's 400 features per video are kept, so memory does not grow with N.
- Per-frame LPIPS (AlexNet), PSNR and SSIM of every generated frame against the truth: curves over the frame
  index and their means.
- Baselines of the conditioned modes, built from the real shards: copy the last observed frame (predict) or the
  nearest observed frame (interpolate).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from omegaconf import OmegaConf

from evals.metrics.fvd import FeatureStats, I3DFeatures, cache_path, frechet_distance
from evals.metrics.image import psnr, ssim
from tools.core.errors import UserError

SHARD_DIR = "shards"
CONDITIONED = ("predict", "interpolate", "reconstruct")


@dataclass
class SampleFolder:
    """A `--exp sample` run folder and what its sample.json records."""

    path: Path
    info: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "SampleFolder":
        folder = Path(path)
        record = folder / "sample.json"
        if not record.is_file():
            raise UserError(f"{folder}: no sample.json; pass a finished `--exp sample` run folder (re-run its "
                            f"command to finish it)")
        info = json.loads(record.read_text())
        shards = cls(folder, info).shard_files("fake")
        if sum(int(json.loads(p.with_suffix(".json").read_text())["videos"]) for p in shards) != info["written"]:
            raise UserError(f"{folder}: its shards do not hold the {info['written']} videos sample.json records; "
                            f"re-run the sample command to complete them")
        return cls(folder, info)

    @property
    def mode(self) -> str:
        return str(self.info["mode"])

    def shard_files(self, kind: str) -> list[Path]:
        return sorted((self.path / SHARD_DIR).glob(f"{kind}_*.pt"))

    def shards(self, kind: str) -> Iterator[torch.Tensor]:
        """uint8 [b, T, 3, H, W] per shard, one at a time."""
        for path in self.shard_files(kind):
            yield torch.load(path, map_location="cpu", weights_only=True)


def baseline_video(real: torch.Tensor, observed: list[int], wanted: list[int], mode: str) -> torch.Tensor:
    """Copy the last observed frame forward (predict) or the nearest observed frame (interpolate)."""
    video = real.clone()
    for frame in wanted:
        if mode == "predict":
            source = max(f for f in observed if f < frame)
        else:
            source = min(observed, key=lambda f: (abs(f - frame), f))
        video[:, frame] = real[:, source]
    return video


@dataclass
class FrameScores:
    """Running sums of per-frame LPIPS / PSNR / SSIM over videos."""

    frames: list[int]
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    count: int = 0

    def add(self, fake: torch.Tensor, real: torch.Tensor, lpips: torch.nn.Module, device: torch.device) -> None:
        for name in ("lpips", "psnr", "ssim"):
            self.sums.setdefault(name, np.zeros(len(self.frames)))
        for k, frame in enumerate(self.frames):
            a, b = fake[:, frame], real[:, frame]
            values = {"psnr": psnr(a, b), "ssim": ssim(a, b)}
            with torch.no_grad():
                to_signed = lambda x: x.to(device).float() / 127.5 - 1  # noqa: E731
                values["lpips"] = lpips(to_signed(a), to_signed(b)).cpu()
            for name, value in values.items():
                finite = value.double().clamp(max=100.0)  # identical frames: PSNR inf, counted as 100 dB
                self.sums[name][k] += float(finite.sum())
        self.count += len(fake)

    def curves(self) -> dict[str, list[float]]:
        return {name: (total / max(self.count, 1)).round(5).tolist() for name, total in self.sums.items()}

    def means(self) -> dict[str, float]:
        return {name: float(np.mean(curve)) for name, curve in self.curves().items()}


def _features(batches: Iterator[torch.Tensor], extractor: I3DFeatures, description: str) -> np.ndarray:
    return extractor(batches, description=description)


def real_stats_name(info: dict[str, Any], split: str, count: int) -> str:
    """Cache name of the dataset's real statistics: dataset, its path and clip settings, split, frames, size, N."""
    data = info.get("data_config") or {}
    key = json.dumps([info.get("data_path"), data.get("include"), data.get("crop"), data.get("frame_stride"),
                      data.get("test_fraction"), data.get("time_range"), data.get("fold"), data.get("train_lists"),
                      data.get("test_clip_step"), data.get("clip_step")], default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return (f"{info.get('data')}-{digest}-{split}-{info['n_frames']}f-{info['height']}x{info['width']}"
            f"-n{count}")


def dataset_batches(info: dict[str, Any], split: str, max_clips: int, batch_size: int
                    ) -> tuple[Callable[[], Iterator[torch.Tensor]], int]:
    """A factory of uint8 batches of the dataset's clips (the sampled videos' size, crop and length), up to
    max_clips evenly spread, and their count."""
    from tools.data.datasets import spread_subset, video_clips

    if not info.get("data_path"):
        raise UserError("FVD of generate mode needs the real clips: pass --data and --data_path to the sample "
                        "command (they are recorded in its sample.json)")
    data = dict(info.get("data_config") or {})
    data["frames"] = int(info["n_frames"])
    cfg = OmegaConf.create({"data": data, "run": {"data": info["data"], "data_path": info["data_path"]}})
    clips = spread_subset(video_clips(cfg, split), max_clips)

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, len(clips), batch_size):
            items = [clips[i]["frames"] for i in range(start, min(start + batch_size, len(clips)))]
            yield (torch.stack(items) * 255).round().to(torch.uint8)

    return batches, len(clips)


def real_shards_digest(folder: SampleFolder) -> str:
    """Identity of a folder's real clips: folders that observed the same clips share their I3D statistics."""
    digest = hashlib.sha1()
    for shard in folder.shards("real"):  # the pixels: torch.save'd files of equal tensors differ in their bytes
        digest.update(shard.numpy().tobytes())
    return digest.hexdigest()


def evaluate_folder(folder: SampleFolder, extractor: I3DFeatures, lpips: torch.nn.Module | None, device: torch.device,
                    cache_dir: Path | None, real_split: str = "test", real_clips: int = 2048,
                    baselines: bool = True, seen: dict[str, FeatureStats] | None = None) -> list[dict[str, Any]]:
    """Rows of the table for one sample folder (and its baseline when it has one); `seen` keeps the statistics of
    real clips already measured in this evaluation."""
    seen = {} if seen is None else seen
    info = folder.info
    row: dict[str, Any] = {"name": folder.path.name, "mode": folder.mode, "n": info["written"],
                           "frames": info["n_frames"], "steps": info["steps"], "sampler": info["sampler"],
                           "seconds_per_video": info.get("seconds_per_video")}
    fake_stats = FeatureStats.from_features(_features(folder.shards("fake"), extractor, f"I3D {folder.path.name}"))
    if folder.mode in CONDITIONED:
        key = real_shards_digest(folder)
        if key not in seen:
            seen[key] = FeatureStats.from_features(_features(folder.shards("real"), extractor, "I3D real clips"))
        real_stats = seen[key]
        row["fvd_against"] = f"the {info['written']} observed real clips"
    else:
        batches, count = dataset_batches(info, real_split, real_clips, extractor.batch_size)
        name = real_stats_name(info, real_split, count)
        path = cache_path(cache_dir, name) if cache_dir is not None else None
        if path is not None and path.is_file():
            real_stats = FeatureStats.load(path)
        else:
            real_stats = FeatureStats.from_features(_features(batches(), extractor, f"I3D real {real_split}"))
            if path is not None:
                real_stats.save(path)
        row["fvd_against"] = f"{count} real {real_split} clips"
    row["fvd"] = frechet_distance(fake_stats, real_stats)
    rows = [row]
    if folder.mode in CONDITIONED and lpips is not None:
        scores = FrameScores(list(info["generated"]))
        for fake, real in zip(folder.shards("fake"), folder.shards("real")):
            scores.add(fake, real, lpips, device)
        row.update(scores.means(), curves=scores.curves(), curve_frames=list(info["generated"]))
    done = f"baseline {folder.mode} {real_shards_digest(folder)}" if folder.mode in CONDITIONED else None
    if baselines and folder.mode in ("predict", "interpolate") and done not in seen:  # once per set of real clips
        rows.append(baseline_row(folder, extractor, lpips, device, real_stats))
        seen[done] = real_stats
    return rows


def baseline_row(folder: SampleFolder, extractor: I3DFeatures, lpips: torch.nn.Module | None, device: torch.device,
                 real_stats: FeatureStats) -> dict[str, Any]:
    info = folder.info
    observed, wanted = list(info["observed"]), list(info["generated"])
    name = "copy last observed frame" if folder.mode == "predict" else "copy nearest observed frame"
    copies = (baseline_video(real, observed, wanted, folder.mode) for real in folder.shards("real"))
    stats = FeatureStats.from_features(_features(copies, extractor, f"I3D {name}"))
    row: dict[str, Any] = {"name": name, "mode": folder.mode, "n": info["written"], "frames": info["n_frames"],
                           "steps": 0, "sampler": "-", "seconds_per_video": 0.0,
                           "fvd_against": f"the {info['written']} observed real clips",
                           "fvd": frechet_distance(stats, real_stats)}
    if lpips is not None:
        scores = FrameScores(wanted)
        for real in folder.shards("real"):
            scores.add(baseline_video(real, observed, wanted, folder.mode), real, lpips, device)
        row.update(scores.means(), curves=scores.curves(), curve_frames=wanted)
    return row


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """One table: FVD with N, LPIPS / PSNR / SSIM of generated frames, sampling seconds per video."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| videos | mode | N | frames | FVD (against) | LPIPS | PSNR | SSIM | sampler, steps | s / video |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['mode']} | {r['n']} | {r['frames']} | {r['fvd']:.1f} ({r['fvd_against']}) "
                     f"| {fmt(r.get('lpips'), '.4f')} | {fmt(r.get('psnr'), '.2f')} | {fmt(r.get('ssim'), '.4f')} "
                     f"| {r['sampler']}, {r['steps']} | {fmt(r.get('seconds_per_video'), '.3f')} |")
    return "\n".join(lines) + "\n"


def curves_markdown(rows: list[dict[str, Any]], metric: str = "lpips") -> str:
    """Per generated frame: the metric of every row that has curves."""
    with_curves = [r for r in rows if r.get("curves")]
    if not with_curves:
        return ""
    frames = with_curves[0]["curve_frames"]
    lines = [f"| frame | " + " | ".join(r["name"] for r in with_curves) + " |",
             "|---|" + "---|" * len(with_curves)]
    for k, frame in enumerate(frames):
        cells = []
        for r in with_curves:
            curve_frames = r["curve_frames"]
            cells.append(f"{r['curves'][metric][curve_frames.index(frame)]:.4f}" if frame in curve_frames else "-")
        lines.append(f"| {frame + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_samples(folders: list[str | Path], device: torch.device, cache_dir: Path | None, batch_size: int = 8,
                     real_split: str = "test", real_clips: int = 2048, baselines: bool = True,
                     lpips_net: str = "alex", progress: bool = True) -> tuple[list[dict[str, Any]], str]:
    """Every folder's rows (and baselines) and the markdown report: the table, then LPIPS and PSNR per frame."""
    from evals.metrics.lpips import LPIPS

    opened = [SampleFolder.open(folder) for folder in folders]
    extractor = I3DFeatures(device, batch_size, progress)
    lpips = LPIPS(lpips_net).to(device) if any(f.mode in CONDITIONED for f in opened) else None
    seen: dict[str, FeatureStats] = {}
    rows = [row for folder in opened for row in
            evaluate_folder(folder, extractor, lpips, device, cache_dir, real_split, real_clips, baselines, seen)]
    markdown = table_markdown(rows)
    markdown += f"\nPeak resident memory of this evaluation: {peak_rss_gib():.2f} GiB.\n"
    for metric in ("lpips", "psnr", "ssim"):
        curves = curves_markdown(rows, metric)
        if curves:
            markdown += f"\n{metric.upper()} per generated frame (frame numbers from 1):\n\n{curves}"
    return rows, markdown
