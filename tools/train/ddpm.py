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
from tools.core.distributed import DistContext, train_autocast
from tools.core.logger import RunLogger
from tools.data.datasets import training_clips, validation_clips
from tools.data.stage import require_data_path
from tools.diffusion.frame_sets import check_frames_config, gather_frames, sample_frame_sets_batch
from tools.diffusion.gaussian import GaussianDiffusion, measure_scale_factor
from tools.diffusion.precond import Precond
from tools.predict.first_stage_io import build_frozen_first_stage, first_stage_record
from tools.diffusion.video_plans import plan_video
from tools.predict.video_predictor import (LatentScales, VideoPredictor, build_denoiser, build_static_prior,
                                           prior_cond, static_channels_of)
from tools.train.ae_losses import psnr
from tools.train.latent_cache import ClipLatents
from tools.train.loop import open_stage, run_stage
from tools.train.task import StageTask, measure_scales_once
from tools.train.visuals import side_by_side, video_grid


def clip_frames(batch: dict, device: torch.device) -> torch.Tensor:
    return batch["frames"].to(device, non_blocking=True) * 2 - 1


class DiffusionTask(StageTask):
    """One optimisation step of the denoiser on freshly encoded latents of a batch of clips, and of the static
    prior (when the config has one) on the same clips' scene + object latents."""

    def __init__(self, cfg: DictConfig, ctx: DistContext, record: dict[str, Any]) -> None:
        self.record = record
        self.first_stage = build_frozen_first_stage(record, ctx.device)
        super().__init__(cfg, ctx, build_denoiser(cfg, self.first_stage))
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.scales: LatentScales | None = None
        self.precond = Precond(self.wrapped, self.diffusion)
        self.latents = ClipLatents(self.first_stage, int(cfg.data.cond_frames), bool(cfg.train.get("cache_latents")))
        prior = build_static_prior(cfg, self.first_stage)
        self.prior = StageTask(cfg, ctx, prior) if prior is not None else None
        # An attribute of its own, so the learning-rate schedule (task_optimizers) finds it.
        self.prior_optimizer = self.prior.optimizer if self.prior is not None else None

    @torch.no_grad()
    def measure_scales(self, batches: list[dict]) -> None:
        """Latent scale factors from a few batches of data, once per run (then kept in the checkpoint)."""
        motion, static = [], []
        for batch in batches:
            clip_motion, features = self.latents.encode(batch, clip_frames(batch, self.ctx.device))
            motion.append(clip_motion)
            if features is not None:
                static.append(self.static_of(features[:, : int(self.cfg.data.cond_frames)]))
        self.scales = LatentScales(motion=measure_scale_factor(torch.cat(motion)),
                                   static=measure_scale_factor(torch.cat(static)) if static else 1.0)

    def static_of(self, features: torch.Tensor) -> torch.Tensor:
        """Raw scene + object latents [B, Cs+Co, h, w] from context features of the frames that define them."""
        scene, obj = self.first_stage.static_from_context(features)
        return torch.cat([scene, obj], 1).float()

    @torch.no_grad()
    def encode_batch(self, motion: torch.Tensor, features: torch.Tensor | None, obs_idx: torch.Tensor,
                     obs_keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled motion latents of every frame, and static latents from each clip's kept observed frames."""
        if features is None:
            return motion * self.scales.motion, None
        # Static latents must not see target frames: recompute them per clip from its observed set (a clip with
        # nothing observed takes its first data.cond_frames, which generation replaces by the static prior's draw).
        cond_count = int(self.cfg.data.cond_frames)
        static = []
        for b in range(motion.shape[0]):
            kept = obs_idx[b][obs_keep[b]].to(features.device)
            static.append(self.static_of(features[b:b + 1, kept] if kept.numel() else features[b:b + 1, :cond_count]))
        return motion * self.scales.motion, torch.cat(static) * self.scales.static

    def static_keep(self, generator: torch.Generator, obs_keep: torch.Tensor) -> torch.Tensor | None:
        """Which samples see their static latents: those with a kept observed frame, and, with probability
        frames.prob_keep_static, those with none (generation: static latents then come from the static prior).
        None (the denoiser's default rule) when that probability is 0, which draws no random number."""
        prob = float(self.cfg.frames.get("prob_keep_static", 0.0))
        if prob <= 0:
            return None
        draws = torch.rand(obs_keep.shape[0], generator=generator) < prob
        return obs_keep.any(dim=1) | draws

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        frames = clip_frames(batch, self.ctx.device)
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # from the saved RNG
        fcfg = self.cfg.frames
        obs_idx, tgt_idx, obs_keep = sample_frame_sets_batch(
            generator, frames.shape[0], n_frames=int(fcfg.n_frames), n_obs_max=int(fcfg.n_obs_max),
            n_tgt=int(fcfg.n_tgt), prob_mask_cond=float(fcfg.prob_mask_cond),
            prob_mask_future=float(fcfg.prob_mask_future), prob_competition_case=float(fcfg.prob_competition_case))
        static_keep = self.static_keep(generator, obs_keep)
        with train_autocast(self.ctx, self.cfg.train):
            clip_motion, features = self.latents.encode(batch, frames)
            motion, static = self.encode_batch(clip_motion, features, obs_idx, obs_keep)
        cond = DenoiserCond(gather_frames(motion, obs_idx), obs_idx, tgt_idx, obs_keep, static,
                            static_keep).to(self.ctx.device)
        self.model.train()
        with train_autocast(self.ctx, self.cfg.train):
            loss, per_sample, t = self.diffusion.training_loss(
                lambda x, tt: self.precond.network_output(x, tt, cond), gather_frames(motion, tgt_idx), generator)
        self.step(loss)
        logs = {"loss": loss.item(), **self.diffusion.loss_by_bucket(t.cpu(), per_sample.cpu())}
        if self.prior is not None:
            logs["prior_loss"] = self.prior_step(features, generator)
        return logs

    def prior_step(self, features: torch.Tensor, generator: torch.Generator) -> float:
        """One step of the static prior on the scene + object latents of the clips' first data.cond_frames frames
        (what stage 1 decodes every frame with)."""
        with torch.no_grad(), train_autocast(self.ctx, self.cfg.train):
            static = self.static_of(features[:, : int(self.cfg.data.cond_frames)])[:, None] * self.scales.static
        cond = prior_cond(static.shape[0], static[:, 0]).to(self.ctx.device)
        precond = Precond(self.prior.wrapped, self.diffusion)
        self.prior.model.train()
        with train_autocast(self.ctx, self.cfg.train):
            loss, _, _ = self.diffusion.training_loss(lambda x, tt: precond.network_output(x, tt, cond), static,
                                                      generator)
        self.prior.step(loss)
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        state = dict(super().state_dict(), scales=vars(self.scales), first_stage=self.record)
        if self.prior is not None:
            state["static_prior"] = self.prior.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scales = LatentScales(**state["scales"])
        if self.prior is not None:
            self.prior.load_state_dict(state["static_prior"])

    def scale_record(self) -> dict[str, float]:
        return dict(vars(self.scales))

    def set_scale_record(self, record: dict[str, float]) -> None:
        self.scales = LatentScales(**record)

    def predictor(self) -> VideoPredictor:
        """A sampler over the EMA weights (a separate copy; training weights stay untouched)."""
        prior = self.prior.inference_model().eval() if self.prior is not None else None
        return VideoPredictor(self.first_stage, self.inference_model().eval(), self.cfg, self.scales, self.ctx.device,
                              prior)


def _jaccard(pred: torch.Tensor, true: torch.Tensor) -> float:
    from evals.metrics.jaccard import jaccard_score

    return float(jaccard_score(pred, true))


@torch.no_grad()
def validate(task: DiffusionTask, clips: DataLoader | None, step: int, logger: RunLogger) -> dict[str, float]:
    """Frame-22 prediction on held-out clips: Jaccard of the semantic head's mask, and an image grid. Natural
    video (no masks): validate_video."""
    if clips is None:
        return {}
    if task.cfg.run.data != "CLEVRER":
        return validate_video(task, clips, step, logger)
    cfg, ctx = task.cfg, task.ctx
    predictor = task.predictor()
    n_obs, last = int(cfg.data.cond_frames), int(cfg.frames.n_frames) - 1
    generator = torch.Generator().manual_seed(int(cfg.run.seed))
    preds, truths, first = [], [], None
    for batch in clips:
        frames = clip_frames(batch, ctx.device)
        rgb, logits = predictor.predict(frames[:, :n_obs], [last], generator=generator,
                                        amp=lambda: train_autocast(ctx, cfg.train))
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


@torch.no_grad()
def validate_video(task: DiffusionTask, clips: DataLoader, step: int, logger: RunLogger) -> dict[str, float]:
    """Predict mode on held-out clips (the first data.cond_frames observed, the rest generated): PSNR of the
    generated frames, truth beside sample as a TensorBoard video; and one generate-mode sample (nothing observed)."""
    cfg, ctx = task.cfg, task.ctx
    predictor = task.predictor()
    n_obs, n_frames = int(cfg.data.cond_frames), int(cfg.frames.n_frames)
    observed, wanted = list(range(n_obs)), list(range(n_obs, n_frames))
    plan = plan_video(observed, wanted, n_frames, int(cfg.frames.n_obs_max), int(cfg.frames.n_tgt))
    generator = torch.Generator().manual_seed(int(cfg.run.seed))
    amp = lambda: train_autocast(ctx, cfg.train)  # noqa: E731
    scores, first = [], None
    for batch in clips:
        frames = clip_frames(batch, ctx.device)
        sampled = predictor.sample_video(frames[:, :n_obs], observed, wanted, plan, generator, amp)
        scores.append(float(psnr(sampled, frames[:, n_obs:])))
        if first is None:
            first = (frames[0], torch.cat([frames[0, :n_obs], sampled[0]]))
    logger.log_video("ddpm/prediction_truth_vs_sample", side_by_side(*first), step)
    if task.prior is not None or static_channels_of(cfg, task.first_stage) == 0:
        generated = predictor.sample_video(None, [], list(range(n_frames)),
                                           plan_video([], list(range(n_frames)), n_frames, int(cfg.frames.n_obs_max),
                                                      int(cfg.frames.n_tgt)), generator, amp, batch=1)
        logger.log_video("ddpm/generated", side_by_side(generated[0]), step)
    return {"pred_psnr": sum(scores) / len(scores)}


def run(cfg: DictConfig, ctx: DistContext) -> int:
    if cfg.model.get("backbone") == "slot_transformer":  # the object-slot route: diffusion over trajectories
        from tools.train.slot_ddpm import run as run_slots

        return run_slots(cfg, ctx)
    require_data_path(cfg)
    check_frames_config(cfg)
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
