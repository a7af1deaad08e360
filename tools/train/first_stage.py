"""`--exp first_stage`: train the scene/object/motion autoencoder, optionally with the GAN finetune.

  python main.py --exp first_stage --id main --pretrain_config configs/autoencoder/base.yaml \
      --data CLEVRER --data_path D --batch_size 8
  python main.py --exp first_stage --id main_gan --pretrain_config configs/autoencoder/base_gan.yaml \
      --data CLEVRER --data_path D --first_stage_folder results/first_stage_main_CLEVRER_42/

Clips hold data.frames frames of which the first data.cond_frames are observed: scene and object latents
come from those only, every frame is rebuilt from its own motion latent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from models.first_stage import build_first_stage
from tools.core.checkpoint import check_config_matches, load_checkpoint
from tools.core.config import to_plain
from tools.core.distributed import DistContext, average_gradients, train_autocast, unwrap
from tools.core.errors import UserError
from tools.core.logger import RunLogger
from tools.core.runs import LAST_CHECKPOINT
from tools.data.datasets import training_clips, validation_clips
from tools.data.stage import require_data_path
from tools.diffusion.frame_sets import check_frames_config
from tools.train.ae_losses import FirstStageLoss, mask_iou, psnr
from tools.train.loop import isolated_rng, open_stage, optimizer_step, run_stage
from tools.train.task import StageTask
from tools.train.visuals import side_by_side, video_grid


def split_batch(batch: dict, cfg: DictConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor | None]:
    """(frames in [-1,1] [B,T,3,H,W], observed frames, masks or None when no clip in the batch has one)."""
    frames = batch["frames"].to(device, non_blocking=True) * 2 - 1
    masks = batch.get("mask")
    has_mask = batch.get("has_mask")
    if masks is None or has_mask is None or not bool(torch.as_tensor(has_mask).any()):
        masks = None
    else:
        masks = masks.to(device, non_blocking=True)
    return frames, frames[:, : int(cfg.data.cond_frames)], masks


class FirstStageTask(StageTask):
    """One optimisation step of the autoencoder (and of the discriminators once the GAN is on)."""

    def __init__(self, cfg: DictConfig, ctx: DistContext) -> None:
        model = build_first_stage(cfg)
        self.loss = FirstStageLoss(cfg.loss).to(ctx.device)
        if float(self.loss.config["lpips_weight"]) > 0:
            # Built now rather than at the first step, with its random init kept off the training stream:
            # otherwise a resumed process draws that init once more and its RNG stream diverges.
            with isolated_rng():
                self.loss.perceptual()
        super().__init__(cfg, ctx, model)
        disc_params = self.loss.discriminator_parameters()
        gan = cfg.loss.get("gan") or {}
        self.disc_optimizer = torch.optim.AdamW(disc_params, lr=float(gan.get("lr", 1e-4)),
                                                betas=tuple(gan.get("betas", (0.5, 0.9))),
                                                weight_decay=0.0) if disc_params else None

    def subsample(self, frames: torch.Tensor, observed: torch.Tensor, masks: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """train.frames_per_step: rebuild only a random window of that many frames per step, and
        train.cond_frames_per_step: compute the static latents from a random subset of that many observed frames.
        Every frame is still rebuilt from its own motion latent, so this trains the same model on more clips per
        CPU minute (and static latents from any subset, as stage 2 computes them). null: every frame."""
        tcfg = self.cfg.train
        window, cond = tcfg.get("frames_per_step"), tcfg.get("cond_frames_per_step")
        if window and int(window) < frames.shape[1]:
            start = int(torch.randint(0, frames.shape[1] - int(window) + 1, ()))
            frames = frames[:, start:start + int(window)]
            masks = masks[:, start:start + int(window)] if masks is not None else None
        if cond and int(cond) < observed.shape[1]:
            observed = observed[:, torch.randperm(observed.shape[1])[: int(cond)].sort().values]
        return frames, observed, masks

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        frames, observed, masks = self.subsample(*split_batch(batch, self.cfg, self.ctx.device))
        self.model.train()
        with train_autocast(self.ctx, self.cfg.train):
            rgb, mask_logits, latents = self.wrapped(frames, observed)
        loss, logs = self.loss(frames, rgb.float(), mask_logits.float() if mask_logits is not None else None,
                               masks, latents, step, last_layer=self._last_layer())
        self.step(loss)
        if self.disc_optimizer is not None and self.loss.gan_active(step):
            with train_autocast(self.ctx, self.cfg.train):
                d_loss, d_logs = self.loss.discriminator_loss(frames, rgb.float(), step)
            optimizer_step(self.disc_optimizer, self.scaler, d_loss, self.loss.discriminator_parameters(),
                           after_backward=lambda: average_gradients(self.loss.discriminator, self.ctx))
            logs.update(d_logs)
        return {key: float(value) for key, value in logs.items()}

    def _last_layer(self) -> torch.Tensor | None:
        model = unwrap(self.model)
        return model.last_layer() if hasattr(model, "last_layer") else None

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.disc_optimizer is not None:
            state["discriminator"] = self.loss.discriminator.state_dict()
            state["disc_optimizer"] = self.disc_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        super().load_state_dict(state, weights_only)
        if weights_only:
            return
        if self.disc_optimizer is not None and "discriminator" in state:
            self.loss.discriminator.load_state_dict(state["discriminator"])
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])

    def start_from_folder(self, folder: str) -> None:
        """GAN finetune: take weights, EMA and optimizer state of a trained first stage (a new step count)."""
        path = Path(folder) / LAST_CHECKPOINT
        if not path.exists():
            raise UserError(f"--first_stage_folder '{folder}' holds no {LAST_CHECKPOINT}; pass the run folder "
                            f"of a finished `--exp first_stage` run (e.g. results/first_stage_main_CLEVRER_42/)")
        state = load_checkpoint(path, map_location=self.ctx.device)
        check_config_matches(state.get("config", {}), to_plain(self.cfg), "model", path)
        self.load_state_dict(state, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        print(f"starting from {path} (its step {state['step']})")


@torch.no_grad()
def validate(task: FirstStageTask, clips: DataLoader | None, cfg: DictConfig) -> dict[str, float]:
    """Reconstruction PSNR and semantic-head mask IoU of held-out clips (EMA weights)."""
    if clips is None:
        return {}
    model = task.inference_model()
    scores: dict[str, list[float]] = {"psnr": [], "mask_iou": []}
    for batch in clips:
        frames, observed, masks = split_batch(batch, cfg, task.ctx.device)
        with train_autocast(task.ctx, cfg.train):
            rgb, mask_logits = model.decode(model.encode(frames, observed))
        scores["psnr"].append(float(psnr(rgb.float(), frames)))
        if masks is not None and mask_logits is not None:
            scores["mask_iou"].append(float(mask_iou(mask_logits.float(), masks)))
    return {f"recon_{k}": sum(v) / len(v) for k, v in scores.items() if v}


def log_reconstruction(task: FirstStageTask, batch: dict, logger: RunLogger, step: int) -> None:
    """Input and reconstruction of one clip (with true and predicted masks when the clip has a mask) as an
    image grid, and input beside reconstruction as a TensorBoard video."""
    cfg = task.cfg
    frames, observed, _ = split_batch(batch, cfg, task.ctx.device)
    model = unwrap(task.model).eval()
    with torch.no_grad(), train_autocast(task.ctx, cfg.train):
        rgb, mask_logits = model.decode(model.encode(frames[:1], observed[:1]))
    model.train()
    true_mask = batch["mask"][0] if "mask" in batch and bool(torch.as_tensor(batch["has_mask"])[0]) else None
    pred_mask = mask_logits[0].argmax(1) if mask_logits is not None and true_mask is not None else None
    logger.log_image("first_stage/reconstruction",
                     video_grid(frames[0], rgb[0].float(), true_mask, pred_mask), step)
    logger.log_video("first_stage/reconstruction_video", side_by_side(frames[0], rgb[0].float()), step)


def run(cfg: DictConfig, ctx: DistContext) -> int:
    if cfg.model.get("type") == "slots":  # the object-slot route has its own small stage 1
        from tools.train.slot_first_stage import run as run_slots

        return run_slots(cfg, ctx)
    require_data_path(cfg)
    check_frames_config(cfg)
    dataset = training_clips(cfg)
    stage = open_stage(cfg, ctx)
    task = FirstStageTask(cfg, ctx)
    if cfg.run.get("first_stage_folder") and not (stage.run_dir / LAST_CHECKPOINT).exists():
        task.start_from_folder(str(cfg.run.first_stage_folder))
    val = validation_clips(cfg, int(cfg.train.get("val_clips", 8)))
    val_loader = DataLoader(val, batch_size=stage.batch_size) if val is not None and len(val) else None
    preview = next(iter(DataLoader(val if val_loader else dataset, batch_size=1)))
    val_every = int(cfg.train.get("val_every") or cfg.train.log_every)
    return run_stage(stage, task, stage.batches(dataset, "first-stage training data"),
                     on_log=lambda step, final: validate(task, val_loader, cfg)
                     if ctx.is_main and (step % val_every == 0 or final) else {},
                     on_images=lambda step: log_reconstruction(task, preview, stage.logger, step))
