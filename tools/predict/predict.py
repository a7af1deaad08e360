"""`--exp predict`: frames 1-11 of every video of a split -> N diffusion samples of the future -> frame-22 masks.

  python main.py --exp predict --data CLEVRER --data_path D --config_mod \
      predict.ddpm=results/ddpm_main_CLEVRER_42/model_last.pth \
      predict.segmenter=results/segment_main_CLEVRER_42/model_best.pth predict.split=hidden

Per video: sample the target frames with the chosen inference strategy, decode them, score frame 22 with the
decoder's semantic head and/or the segmenter (predict.fusion), drop classes absent from the observed frames
(predict.suppress_absent), take the per-pixel majority over samples, resize to the dataset's resolution.
Finished videos are kept in per_video/ and skipped when the command is re-run (resumable on large hidden sets);
the submission tensor is assembled from them at the end.
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from models.identity_autoencoder import IdentityAutoencoder
from tools.core.atomic import torch_save_atomic, write_text_atomic
from tools.data.clevrer import ClevrerDataset, read_frames, read_mask, resize_frames
from tools.core.distributed import DistContext, autocast, barrier
from tools.core.checkpoint import load_checkpoint
from tools.core.errors import UserError
from tools.predict.instance_vote import (EDGE_THRESHOLD, ObjectJudge, instance_vote, load_vote_judge,
                                        vote_edge_threshold, voted_video_masks)
from tools.predict.postprocess import majority_vote, present_classes, suppress_absent_logits
from tools.predict.outputs import write_gif, write_video_pngs
from tools.core.runs import check_recorded_inputs, prepare_run_dir, run_dir_for, write_recorded_inputs
from tools.data.stage import require_data_path
from tools.predict.slot_predictor import is_slot_checkpoint
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


def result_path(out_dir: Path, video_id: int) -> Path:
    return out_dir / "per_video" / f"video_{video_id}" / "result.pth"


def _to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    return ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def sample_per_video(predictor: VideoPredictor, observed: torch.Tensor, video_ids: list[int], seed: int,
                     targets: list[int], n_samples: int, strategy: str | None, amp) -> tuple[torch.Tensor, Any]:
    """Each video sampled alone with a generator of its own: its frames and mask are a function of (seed, video
    id) only, whatever batch, max_videos or resumed run it falls in."""
    outputs = [predictor.predict(observed[b:b + 1], targets, n_samples, strategy,
                                 torch.Generator().manual_seed(seed * 1_000_003 + video_id), amp=amp)
               for b, video_id in enumerate(video_ids)]
    head = None if outputs[0][1] is None else torch.cat([out[1] for out in outputs])
    return torch.cat([out[0] for out in outputs]), head


def predict_split(pcfg: DictConfig | dict, data_path: str, out_dir: Path, ctx: DistContext,
                  seed: int = 42) -> dict[str, Any]:
    """Predict every video of pcfg.split into out_dir (resumable); returns the meta record written."""
    if not pcfg.get("ddpm"):
        raise UserError("--exp predict needs predict.ddpm: the model_last.pth of an --exp ddpm run "
                        "(--config_mod predict.ddpm=results/ddpm_main_CLEVRER_42/model_last.pth)")
    if is_slot_checkpoint(load_checkpoint(str(pcfg.ddpm), map_location="cpu")):
        from tools.predict.slot_route import predict_split_slots  # the object-slot route

        return predict_split_slots(pcfg, data_path, out_dir, ctx, seed)
    predictor = VideoPredictor.from_checkpoint(str(pcfg.ddpm), ctx.device)
    if pcfg.get("sample_steps"):
        predictor.cfg.diffusion.sample_steps = int(pcfg.sample_steps)
    segmenter = None
    if pcfg.get("segmenter"):
        from tools.predict.segmenter_io import load_segmenter

        segmenter = load_segmenter(str(pcfg.segmenter), ctx.device)
    vote_min_pixels = int(pcfg.get("vote_min_pixels") or 1) if pcfg.get("instance_vote") else None
    scorer = MaskScorer(predictor, segmenter, str(pcfg.fusion), bool(pcfg.get("tta", False)), vote_min_pixels,
                        load_vote_judge(pcfg, ctx.device), vote_edge_threshold(pcfg))
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
                mask = frame22_mask(scores, allowed, full_size, vote_min_pixels).cpu()
            torch_save_atomic({"mask": mask, "frames": _to_uint8(rgb[b, 0])},
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
            "instance_vote": vote_min_pixels is not None}
    if ctx.is_main:
        assemble_outputs(out_dir, entries, data_path, meta, int(pcfg.get("png_videos", 8)),
                         int(pcfg.get("gif_videos", 4)), n_obs)
    barrier(ctx)
    return meta


def assemble_outputs(out_dir: Path, entries: list, data_path: str, meta: dict, png_videos: int, gif_videos: int,
                     n_obs: int) -> None:
    """submission.pt, video_ids.json, frames.pt and meta.json from the per-video results, plus PNGs and GIFs."""
    results = [torch.load(result_path(out_dir, e.id), weights_only=True) for e in entries]
    submission = torch.stack([r["mask"] for r in results])
    torch_save_atomic(submission, out_dir / "submission.pt")
    torch_save_atomic(torch.stack([r["frames"] for r in results]), out_dir / "frames.pt")
    write_text_atomic(out_dir / "video_ids.json",
                      json.dumps({"split": meta["split"], "video_ids": [e.id for e in entries]}, indent=2))
    write_text_atomic(out_dir / "meta.json", json.dumps(meta, indent=2))
    for index, (entry, result) in enumerate(zip(entries, results)):
        if index >= max(png_videos, gif_videos):
            break
        observed = read_frames(entry.path, range(n_obs))
        truth = read_mask(entry.path)[-1] if entry.has_mask else None
        if index < png_videos:
            write_video_pngs(out_dir / "per_video" / f"video_{entry.id}", observed, result["frames"][-1],
                             result["mask"], truth)
        if index < gif_videos:
            write_gif(out_dir / "gifs" / f"video_{entry.id}.gif", observed, result["frames"])
    print(f"wrote {out_dir / 'submission.pt'}: {tuple(submission.shape)} uint8, {len(entries)} videos of split "
          f"'{meta['split']}' in natural order")


# Settings that change no prediction: a re-run may change them and still reuse the finished videos.
PRESENTATION_KEYS = ("batch_size", "max_videos", "png_videos", "gif_videos")


def prediction_inputs(cfg: DictConfig, data_path: str) -> dict[str, Any]:
    """What the per-video results depend on, recorded in the run folder (inputs.json)."""
    inputs = {key: value for key, value in OmegaConf.to_container(cfg.predict, resolve=True).items()
              if key not in PRESENTATION_KEYS}
    for key in ("ddpm", "segmenter"):
        if inputs.get(key):
            inputs[key] = str(Path(str(inputs[key])).resolve())
    return dict(inputs, seed=int(cfg.run.seed), data_path=str(Path(data_path).resolve()))


def run(cfg: DictConfig, ctx: DistContext) -> int:
    data_path = require_data_path(cfg)
    if int(cfg.predict.get("batch_size") or 0) < 1:
        raise UserError(f"predict.batch_size={cfg.predict.get('batch_size')} is not a batch size; pass 1 or more")
    inputs = prediction_inputs(cfg, data_path)
    if ctx.is_main and not cfg.run.get("fresh"):  # --fresh moves the old results aside instead
        check_recorded_inputs(run_dir_for(cfg.run), inputs)
    run_dir = prepare_run_dir(cfg, ctx)
    if ctx.is_main:
        write_recorded_inputs(run_dir, inputs)
    predict_split(cfg.predict, data_path, run_dir, ctx, int(cfg.run.seed))
    return 0
