"""`--exp predict` with a grid-latent (or pixel) stage-2 checkpoint: frames 1-11 -> N sampled futures -> masks.

Per video: sample the target frames with the chosen inference strategy, decode them, score frame 22 with the
decoder's semantic head and/or the segmenter (predict.fusion), drop classes absent from the observed frames
(predict.suppress_absent), take the per-pixel majority over samples, resize to the dataset's resolution.
Per-video results, resume, the submission tensor and the output files are those of tools/predict/outputs.py.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from models.identity_autoencoder import IdentityAutoencoder
from tools.core.atomic import torch_save_atomic
from tools.core.distributed import DistContext, autocast, barrier
from tools.core.errors import UserError
from tools.data.clevrer import ClevrerDataset, resize_frames
from tools.predict.instance_vote import (EDGE_THRESHOLD, ObjectJudge, instance_vote, load_vote_judge,
                                        vote_edge_threshold, voted_video_masks)
from tools.predict.outputs import assemble_outputs, peak_memory_gib, result_path
from tools.predict.postprocess import majority_vote, present_classes, suppress_absent_logits
from tools.predict.segmenter_io import load_segmenter
from tools.predict.video_predictor import VideoPredictor

FUSIONS = ("head", "segmenter", "mean")


class MaskScorer:
    """Class log-probabilities of RGB frames from the semantic head and/or the segmenter."""

    def __init__(self, predictor: VideoPredictor, segmenter: torch.nn.Module | None, fusion: str, tta: bool,
                 vote_min_pixels: int | None = None, judge: ObjectJudge | None = None,
                 edge_threshold: float | None = EDGE_THRESHOLD) -> None:
        if fusion not in FUSIONS:
            raise UserError(f"predict.fusion={fusion!r} is unknown; use one of {', '.join(FUSIONS)}")
        if fusion in ("segmenter", "mean") and segmenter is None:
            if fusion == "segmenter":
                raise UserError("predict.fusion=segmenter needs predict.segmenter (a --exp segment checkpoint)")
            fusion = "head"
        if fusion == "head" and isinstance(predictor.first_stage, IdentityAutoencoder):
            raise UserError("a pixel-space model has no semantic head: set predict.segmenter to a --exp segment "
                            "checkpoint (predict.fusion=segmenter)")
        self.predictor, self.segmenter, self.fusion, self.tta = predictor, segmenter, fusion, tta
        self.vote_min_pixels = vote_min_pixels  # None: per-pixel argmax; else predict.instance_vote
        self.judge = judge  # predict.object_classifier
        self.edge_threshold = edge_threshold  # predict.vote_edge_threshold

    def segmenter_scores(self, rgb01: torch.Tensor) -> torch.Tensor:
        return self.segmenter.segment(rgb01, tta=self.tta, size=self.segmenter.trained_size).float().log_softmax(1)

    def scores(self, rgb: torch.Tensor, head_logits: torch.Tensor | None) -> torch.Tensor:
        """rgb [N,3,h,w] in [-1,1], head logits [N,49,h,w] or None -> log-probabilities [N,49,h,w]."""
        parts = []
        if self.fusion in ("head", "mean") and head_logits is not None:
            parts.append(head_logits.float().log_softmax(1))
        if self.fusion in ("segmenter", "mean"):
            parts.append(self.segmenter_scores((rgb.float() + 1) / 2))
        if len(parts) == 1:
            return parts[0]
        return torch.stack([p.exp() for p in parts]).mean(0).clamp_min(1e-8).log()

    @torch.no_grad()
    def observed_masks(self, observed01: torch.Tensor) -> torch.Tensor:
        """Masks [T,H,W] of the observed frames [T,3,H,W] in [0,1] (segmenter, else the first stage's head)."""
        if self.segmenter is not None:
            if self.vote_min_pixels is None:
                return self.segmenter_scores(observed01).argmax(1)
            return voted_video_masks(self.segmenter, observed01, self.tta, self.vote_min_pixels, self.judge,
                                     self.edge_threshold)
        frames = observed01[None] * 2 - 1
        _, logits = self.predictor.first_stage.decode(self.predictor.first_stage.encode(frames, frames))
        return logits[0].argmax(1)


def frame22_mask(scores: torch.Tensor, allowed: torch.Tensor | None, size: tuple[int, int],
                 vote_min_pixels: int | None = None) -> torch.Tensor:
    """Per-sample scores [S,49,h,w] -> one uint8 mask [H,W]: resize, suppress, argmax (or the instance vote of
    each sample when vote_min_pixels is set), majority vote."""
    scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    if allowed is not None:
        scores = suppress_absent_logits(scores, allowed)
    if vote_min_pixels is None:
        return majority_vote(scores.argmax(1)).to(torch.uint8)
    voted = instance_vote(scores, link_frames=False, min_pixels=vote_min_pixels)  # samples are not frames
    return majority_vote(voted.to(scores.device)).to(torch.uint8)


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] in [-1, 1] -> uint8 on the CPU."""
    return ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def sample_per_video(predictor: VideoPredictor, observed: torch.Tensor, video_ids: list[int], seed: int,
                     targets: list[int], n_samples: int, strategy: str | None, amp) -> tuple[torch.Tensor, Any]:
    """Each video sampled alone with a generator of its own: its frames and mask are a function of (seed, video
    id) only, whatever batch, max_videos or resumed run it falls in."""
    outputs = [predictor.predict(observed[b:b + 1], targets, n_samples, strategy,
                                 torch.Generator().manual_seed(seed * 1_000_003 + video_id), amp=amp)
               for b, video_id in enumerate(video_ids)]
    head = None if outputs[0][1] is None else torch.cat([out[1] for out in outputs])
    return torch.cat([out[0] for out in outputs]), head


def mask_scorer(pcfg: DictConfig, predictor: VideoPredictor, ctx: DistContext) -> MaskScorer:
    """predict.fusion / segmenter / tta / instance_vote / object_classifier -> the scorer of sampled frames."""
    segmenter = load_segmenter(str(pcfg.segmenter), ctx.device) if pcfg.get("segmenter") else None
    vote_min_pixels = int(pcfg.get("vote_min_pixels") or 1) if pcfg.get("instance_vote") else None
    return MaskScorer(predictor, segmenter, str(pcfg.fusion), bool(pcfg.get("tta", False)), vote_min_pixels,
                      load_vote_judge(pcfg, ctx.device), vote_edge_threshold(pcfg))


def predict_split_grid(pcfg: DictConfig, data_path: str, out_dir: Path, ctx: DistContext,
                       seed: int = 42) -> dict[str, Any]:
    """Predict every video of pcfg.split into out_dir with the grid route (resumable); returns the meta record."""
    predictor = VideoPredictor.from_checkpoint(str(pcfg.ddpm), ctx.device)
    if pcfg.get("sample_steps"):
        predictor.cfg.diffusion.sample_steps = int(pcfg.sample_steps)
    scorer = mask_scorer(pcfg, predictor, ctx)
    n_obs = int(predictor.cfg.data.cond_frames)
    targets = [int(t) for t in pcfg.targets]
    dataset = ClevrerDataset(data_path, str(pcfg.split), frame_indices=range(n_obs))
    entries = dataset.entries[: pcfg.get("max_videos") or None]
    todo = [i for i, e in enumerate(entries) if not result_path(out_dir, e.id).exists()][ctx.rank::ctx.world_size]
    model_size = (int(predictor.cfg.data.height), int(predictor.cfg.data.width))
    strategy = pcfg.get("strategy") or None
    batch_size, n_samples = int(pcfg.batch_size), int(pcfg.n_samples)
    start, done = time.perf_counter(), 0
    bar = tqdm(total=len(todo), disable=not ctx.is_main, desc=f"predict {pcfg.split}", dynamic_ncols=True)
    for first in range(0, len(todo), batch_size):
        items = [dataset[i] for i in todo[first:first + batch_size]]
        observed = torch.stack([item["frames"] for item in items]).to(ctx.device)  # [B,To,3,H,W] in [0,1]
        full_size = tuple(observed.shape[-2:])
        at_model_size = resize_frames(observed.flatten(0, 1), model_size).unflatten(0, observed.shape[:2])
        rgb, head = sample_per_video(predictor, at_model_size * 2 - 1, [int(item["video_id"]) for item in items],
                                     seed, targets, n_samples, strategy, lambda: autocast(ctx, pcfg.get("amp")))
        for b, item in enumerate(items):
            with torch.no_grad():
                scores = scorer.scores(rgb[b, :, -1], None if head is None else head[b, :, -1])
                allowed = None
                if pcfg.suppress_absent:
                    allowed = present_classes(scorer.observed_masks(observed[b]), int(pcfg.min_observed_pixels))
                mask = frame22_mask(scores, allowed, full_size, scorer.vote_min_pixels).cpu()
            torch_save_atomic({"mask": mask, "frames": to_uint8(rgb[b, 0])},
                              result_path(out_dir, int(item["video_id"])))
        done += len(items)
        bar.update(len(items))
    bar.close()
    barrier(ctx)
    elapsed = time.perf_counter() - start
    meta = {"split": str(pcfg.split), "targets": targets, "strategy": strategy or str(predictor.cfg.inference.strategy),
            "n_samples": n_samples, "sec_per_video": elapsed / done if done else None,
            "peak_mem_gib": peak_memory_gib(ctx.device), "ddpm_checkpoint": str(pcfg.ddpm),
            "segmenter_checkpoint": str(pcfg.segmenter) if pcfg.get("segmenter") else None,
            "fusion": scorer.fusion, "suppress_absent": bool(pcfg.suppress_absent), "videos": len(entries),
            "instance_vote": scorer.vote_min_pixels is not None}
    if ctx.is_main:
        assemble_outputs(out_dir, entries, meta, int(pcfg.get("png_videos", 8)), int(pcfg.get("gif_videos", 4)),
                         n_obs)
    barrier(ctx)
    return meta
