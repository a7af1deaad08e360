"""`--exp predict` with a slot stage-2 checkpoint, one video at a time, top to bottom:

  segment frames 1-11 -> vote (one class per object) -> object states -> sample futures -> combine -> decode -> write

The masks of frames 1-11 are the segmenter's (`predict.segmenter`; with `predict.slot_instance_vote`, one class
per object linked over the frames, named with the object classifier's help when `predict.object_classifier` is
set), or the true ones with `predict.observed_masks: true` on labeled splits (to score the dynamics alone). Only
classes seen in frames 1-11 have an object latent, so classes absent from the observed frames are suppressed by
construction. Per-video results, resume, the submission tensor and the output files are tools/predict/outputs.py's.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from models.object_classifier import FACTORS
from tools.core.atomic import torch_save_atomic
from tools.core.distributed import DistContext, barrier
from tools.core.errors import UserError
from tools.data.clevrer import ClevrerDataset, VideoEntry, read_mask
from tools.predict.instance_vote import load_vote_judge, vote_edge_threshold, voted_video_masks
from tools.predict.outputs import assemble_outputs, peak_memory_gib, result_path
from tools.predict.segmenter_io import load_segmenter
from tools.predict.slot_predictor import SlotPredictor, combine_samples, require_combine

MasksOf = Callable[[VideoEntry, torch.Tensor], torch.Tensor]


def observed_masks_source(pcfg: DictConfig, ctx: DistContext) -> MasksOf:
    """Steps 1-2: a function (entry, frames [To, 3, H, W] in [0, 1]) -> class-id masks [To, H, W] of the observed
    frames: segmented, then (predict.slot_instance_vote) voted to one class per object; or the true masks."""
    if pcfg.get("observed_masks"):
        def true_masks(entry: VideoEntry, frames: torch.Tensor) -> torch.Tensor:
            if not entry.has_mask:
                raise UserError(f"predict.observed_masks=true needs true masks, but {entry.path} has no mask.npy; "
                                f"use a labeled split or set predict.segmenter instead")
            return read_mask(entry.path)[: frames.shape[0]].long()
        return true_masks
    if not pcfg.get("segmenter"):
        raise UserError("the slot route reads object states off the masks of frames 1-11: set predict.segmenter "
                        "(a --exp segment checkpoint) or, on labeled splits, predict.observed_masks=true")
    segmenter = load_segmenter(str(pcfg.segmenter), ctx.device)
    tta = bool(pcfg.get("tta", False))
    if not pcfg.get("slot_instance_vote", pcfg.get("instance_vote")):
        return lambda entry, frames: segmenter.masks(frames, tta=tta).long()
    min_pixels = int(pcfg.get("vote_min_pixels") or 1)
    judge = load_vote_judge(pcfg, ctx.device)
    edge_threshold = vote_edge_threshold(pcfg)
    # One class per object, linked over frames 1-11: a speckle of a wrong class would otherwise become a slot of
    # its own and pull the centroid of the object it belongs to.
    return lambda entry, frames: voted_video_masks(segmenter, frames, tta, min_pixels, judge, edge_threshold).long()


def predict_video(predictor: SlotPredictor, observed: torch.Tensor, frames: torch.Tensor, targets: list[int],
                  n_samples: int, strategy: str | None, combine: str, generator: torch.Generator
                  ) -> dict[str, torch.Tensor]:
    """Steps 3-6 for one video: observed masks [To, H, W] and frames [To, 3, H, W] in [0, 1] -> the last
    target's mask [H, W] uint8 and every target's RGB [K, 3, H, W] uint8."""
    latents = predictor.latents(observed[None], frames[None])                        # 3. states and latents
    guess = combine == "guess"  # the motion head's deterministic guess: one 'sample', no diffusion
    sampled = predictor.sample_states(observed[None], targets, 1 if guess else n_samples, strategy, generator,
                                      states=latents.states, guess=guess)            # 4. [1, N, K, 48, D]
    masks, rgb = [], []
    for k in range(len(targets)):
        states = combine_samples(sampled[:, :, k], combine)                          # 5. combine
        mask, image = predictor.decode(latents, states)                              # 6. decode
        masks.append(mask)
        rgb.append(image)
    frames_uint8 = (torch.stack(rgb, 1)[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return {"mask": masks[-1][0].cpu(), "frames": frames_uint8}


def predict_split_slots(pcfg: DictConfig, data_path: str, out_dir: Path, ctx: DistContext,
                        seed: int = 42) -> dict[str, Any]:
    """Predict every video of pcfg.split into out_dir with the slot route (resumable); returns the meta record."""
    predictor = SlotPredictor.from_checkpoint(str(pcfg.ddpm), ctx.device)
    if pcfg.get("sample_steps"):
        predictor.cfg.diffusion.sample_steps = int(pcfg.sample_steps)
    if pcfg.get("slot_temperature") is not None:
        predictor.cfg.diffusion.temperature = float(pcfg.slot_temperature)
    masks_of = observed_masks_source(pcfg, ctx)
    n_obs = int(predictor.cfg.data.cond_frames)
    targets = [int(t) for t in pcfg.targets]
    dataset = ClevrerDataset(data_path, str(pcfg.split), frame_indices=range(n_obs))
    entries = dataset.entries[: pcfg.get("max_videos") or None]
    todo = [i for i, e in enumerate(entries) if not result_path(out_dir, e.id).exists()][ctx.rank::ctx.world_size]
    combine, n_samples = str(pcfg.get("slot_combine") or "mode"), int(pcfg.get("slot_samples") or pcfg.n_samples)
    require_combine(combine)
    strategy = pcfg.get("strategy") or None
    start = time.perf_counter()
    for index in tqdm(todo, disable=not ctx.is_main, desc=f"predict {pcfg.split} (slots)", dynamic_ncols=True):
        item, entry = dataset[index], dataset.entries[index]
        frames = item["frames"].to(ctx.device)
        with torch.no_grad():
            observed = masks_of(entry, frames).to(ctx.device)                        # 1-2. segment, vote
            generator = torch.Generator().manual_seed(seed * 1_000_003 + int(item["video_id"]))
            result = predict_video(predictor, observed, frames, targets, n_samples, strategy, combine, generator)
        torch_save_atomic(result, result_path(out_dir, entry.id))                    # 7. write
    barrier(ctx)
    elapsed = time.perf_counter() - start
    meta = {"split": str(pcfg.split), "targets": targets, "route": "slots",
            "strategy": strategy or str(predictor.cfg.inference.strategy), "n_samples": n_samples,
            "slot_combine": combine, "sample_steps": int(predictor.cfg.diffusion.sample_steps),
            "temperature": float(predictor.cfg.diffusion.get("temperature", 1.0)),
            "sec_per_video": elapsed / len(todo) if todo else None,
            "peak_mem_gib": peak_memory_gib(ctx.device), "ddpm_checkpoint": str(pcfg.ddpm),
            "segmenter_checkpoint": str(pcfg.segmenter) if pcfg.get("segmenter") else None,
            "object_classifier": str(pcfg.object_classifier) if pcfg.get("object_classifier") else None,
            "vote_classifier_factors": list(pcfg.get("vote_classifier_factors") or FACTORS)
            if pcfg.get("object_classifier") else None,
            "observed_masks": "true" if pcfg.get("observed_masks") else "segmenter",
            "fusion": "slots", "suppress_absent": True, "videos": len(entries)}
    if ctx.is_main:
        assemble_outputs(out_dir, entries, meta, int(pcfg.get("png_videos", 8)), int(pcfg.get("gif_videos", 4)),
                         n_obs)
    barrier(ctx)
    return meta
