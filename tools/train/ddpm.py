"""`--exp ddpm`: conditional diffusion over the frozen first stage's motion latents (stage 2).

  python main.py --exp ddpm --id main --pretrain_config configs/latent-diffusion/base.yaml --data CLEVRER \
      --data_path D --first_model results/first_stage_main_gan_CLEVRER_42/model_last.pth --batch_size 48
  (--first_model none: the same stage in pixel space, the MCVD-style baseline)

Each step draws random observed/target frame sets per clip (tools/diffusion/frame_sets.py, MCVD-style masking of
past and future conditioning), so one model predicts, interpolates and generates.
"""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from models.denoiser import DenoiserCond
from tools.core.distributed import DistContext, autocast
from tools.core.logger import RunLogger
from tools.data.datasets import training_clips, validation_clips
from tools.data.stage import require_data_path
from tools.diffusion.frame_sets import gather_frames, sample_frame_sets_batch
from tools.diffusion.gaussian import GaussianDiffusion, measure_scale_factor
from tools.diffusion.precond import Precond
from tools.predict.first_stage_io import build_frozen_first_stage, first_stage_record
from tools.predict.video_predictor import LatentScales, VideoPredictor, build_denoiser
from tools.train.loop import open_stage, run_stage
from tools.train.task import StageTask, measure_scales_once
from tools.train.visuals import video_grid


def clip_frames(batch: dict, device: torch.device) -> torch.Tensor:
    return batch["frames"].to(device, non_blocking=True) * 2 - 1


class DiffusionTask(StageTask):
    """One optimisation step of the denoiser on freshly encoded latents of a batch of clips."""

    def __init__(self, cfg: DictConfig, ctx: DistContext, record: dict[str, Any]) -> None:
        self.record = record
        self.first_stage = build_frozen_first_stage(record, ctx.device)
        super().__init__(cfg, ctx, build_denoiser(cfg, self.first_stage))
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.scales: LatentScales | None = None
        self.precond = Precond(self.wrapped, self.diffusion)

    @torch.no_grad()
    def measure_scales(self, batches: list[dict]) -> None:
        """Latent scale factors from a few batches of data, once per run (then kept in the checkpoint)."""
        motion, static = [], []
        for batch in batches:
            frames = clip_frames(batch, self.ctx.device)
            latents = self.first_stage.encode(frames, frames[:, : int(self.cfg.data.cond_frames)])
            motion.append(latents.motion.float())
            static.append(torch.cat([latents.scene, latents.object], 1).float())
        static_all = torch.cat(static)
        self.scales = LatentScales(
            motion=measure_scale_factor(torch.cat(motion)),
            static=measure_scale_factor(static_all) if static_all.shape[1] else 1.0)

    @torch.no_grad()
    def encode_batch(self, frames: torch.Tensor, obs_idx: torch.Tensor, obs_keep: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled motion latents of every frame, and static latents from each clip's kept observed frames."""
        cond_count = int(self.cfg.data.cond_frames)
        latents = self.first_stage.encode(frames, frames[:, :cond_count])
        motion = latents.motion.float() * self.scales.motion
        if latents.scene.shape[1] + latents.object.shape[1] == 0:
            return motion, None
        # Static latents must not see target frames: recompute them per clip from its observed set.
        static = []
        for b in range(frames.shape[0]):
            kept = obs_idx[b][obs_keep[b]].to(frames.device)
            source = frames[b:b + 1, kept] if kept.numel() else frames[b:b + 1, :cond_count]
            scene, obj = self.first_stage.encode_static(source)
            static.append(torch.cat([scene, obj], 1))
        return motion, torch.cat(static).float() * self.scales.static

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        frames = clip_frames(batch, self.ctx.device)
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # from the saved RNG
        fcfg = self.cfg.frames
        obs_idx, tgt_idx, obs_keep = sample_frame_sets_batch(
            generator, frames.shape[0], n_frames=int(fcfg.n_frames), n_obs_max=int(fcfg.n_obs_max),
            n_tgt=int(fcfg.n_tgt), prob_mask_cond=float(fcfg.prob_mask_cond),
            prob_mask_future=float(fcfg.prob_mask_future), prob_competition_case=float(fcfg.prob_competition_case))
        with autocast(self.ctx, self.cfg.train.get("amp")):
            motion, static = self.encode_batch(frames, obs_idx, obs_keep)
        cond = DenoiserCond(gather_frames(motion, obs_idx), obs_idx, tgt_idx, obs_keep, static).to(self.ctx.device)
        self.model.train()
        with autocast(self.ctx, self.cfg.train.get("amp")):
            loss, per_sample, t = self.diffusion.training_loss(
                lambda x, tt: self.precond.network_output(x, tt, cond), gather_frames(motion, tgt_idx), generator)
        self.step(loss)
        return {"loss": loss.item(), **self.diffusion.loss_by_bucket(t.cpu(), per_sample.cpu())}

    def state_dict(self) -> dict[str, Any]:
        return dict(super().state_dict(), scales=vars(self.scales), first_stage=self.record)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scales = LatentScales(**state["scales"])

    def scale_record(self) -> dict[str, float]:
        return dict(vars(self.scales))

    def set_scale_record(self, record: dict[str, float]) -> None:
        self.scales = LatentScales(**record)

    def predictor(self) -> VideoPredictor:
        """A sampler over the EMA weights (a separate copy; training weights stay untouched)."""
        return VideoPredictor(self.first_stage, self.inference_model().eval(), self.cfg, self.scales, self.ctx.device)


def _jaccard(pred: torch.Tensor, true: torch.Tensor) -> float:
    from evals.jaccard import jaccard_score

    return float(jaccard_score(pred, true))


@torch.no_grad()
def validate(task: DiffusionTask, clips: DataLoader | None, step: int, logger: RunLogger) -> dict[str, float]:
    """Frame-22 prediction on held-out clips: Jaccard of the semantic head's mask, and an image grid."""
    if clips is None:
        return {}
    cfg, ctx = task.cfg, task.ctx
    predictor = task.predictor()
    n_obs, last = int(cfg.data.cond_frames), int(cfg.frames.n_frames) - 1
    generator = torch.Generator().manual_seed(int(cfg.run.seed))
    preds, truths, first = [], [], None
    for batch in clips:
        frames = clip_frames(batch, ctx.device)
        rgb, logits = predictor.predict(frames[:, :n_obs], [last], generator=generator,
                                        amp=lambda: autocast(ctx, cfg.train.get("amp")))
        if first is None:
            first = (frames[0], rgb[0, 0, 0], None if logits is None else logits[0, 0, 0].argmax(0), batch)
        if logits is not None and bool(batch["has_mask"].all()):
            preds.append(logits[:, 0, 0].argmax(1).cpu())
            truths.append(batch["mask"][:, last])
    frames, predicted, predicted_mask, batch = first
    row_true = torch.cat([frames[:n_obs:5], frames[last:]])
    row_pred = torch.cat([frames[:n_obs:5], predicted[None]])
    logger.log_image("ddpm/frame22_truth_vs_sample", video_grid(row_true, row_pred, frames=range(len(row_true))), step)
    return {"frame22_jaccard": _jaccard(torch.cat(preds), torch.cat(truths))} if preds else {}


def run(cfg: DictConfig, ctx: DistContext) -> int:
    if cfg.model.get("backbone") == "slot_transformer":  # the object-slot route: diffusion over trajectories
        from tools.train.slot_ddpm import run as run_slots

        return run_slots(cfg, ctx)
    require_data_path(cfg)
    record = first_stage_record(cfg.run.get("first_model"), cfg)
    dataset = training_clips(cfg)
    stage = open_stage(cfg, ctx)
    task = DiffusionTask(cfg, ctx, record)
    make_batches = stage.batches(dataset, "stage-2 training data")
    measure_scales_once(task, stage, make_batches, default_batches=4)
    val = validation_clips(cfg, int(cfg.train.get("val_clips", 4)))
    val_loader = DataLoader(val, batch_size=min(stage.batch_size, 4)) if val is not None and len(val) else None
    val_every = int(cfg.train.get("sample_every") or cfg.train.log_every)
    return run_stage(stage, task, make_batches,
                     on_log=lambda step, final: validate(task, val_loader, step, stage.logger)
                     if ctx.is_main and (step % val_every == 0 or final) else {})
