"""`--exp first_stage` with `model.type: slots`: stage 1 of the object-slot route.

  python main.py --exp first_stage --id slots --pretrain_config configs/autoencoder/slots.yaml --data_path D

Geometry comes from the masks, so the only thing learned here is the template refiner: each step encodes a
batch of labeled clips (objects from frames 1-11 only) and decodes a few random frames from their true
states; the loss is the negative log-likelihood of the true class per pixel, leaving out pixels of objects
that first appear after the observed frames (no object latent can draw them). Validation reports the
frame-22 Jaccard of decoding from the TRUE frame-22 states: the ceiling of any dynamics model on top.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from models.slot_autoencoder import SlotAutoencoder
from tools.core.distributed import DistContext, autocast
from tools.data.classes import TARGET_FRAME
from tools.data.datasets import training_clips, validation_clips
from tools.data.stage import require_data_path
from tools.train.loop import open_stage, run_stage
from tools.train.task import StageTask

IGNORE = -100


def decodable_targets(masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """True class ids [B, K, H, W] with pixels of classes that have no object latent set to IGNORE."""
    lookup = torch.cat([torch.ones_like(known[:, :1]), known], dim=1)  # background is always decodable
    keep = lookup.gather(1, masks.clamp(min=0).flatten(1)).view_as(masks) & (masks >= 0)
    return torch.where(keep, masks, torch.full_like(masks, IGNORE))


class SlotFirstStageTask(StageTask):
    """One optimisation step of the template refiner."""

    def __init__(self, cfg: DictConfig, ctx: DistContext) -> None:
        super().__init__(cfg, ctx, SlotAutoencoder(cfg.model))

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        frames = batch["frames"].to(self.ctx.device)
        masks = batch["mask"].to(self.ctx.device).long()
        count = int(self.cfg.train.get("decode_frames", 2))
        chosen = torch.randperm(masks.shape[1])[:count].to(self.ctx.device)  # global RNG: saved in checkpoints
        self.model.train()
        with autocast(self.ctx, self.cfg.train.get("amp")):
            log_probs, known = self.wrapped(frames, masks.clamp(min=0), int(self.cfg.data.cond_frames), chosen)
        targets = decodable_targets(masks[:, chosen], known)
        loss = F.nll_loss(log_probs.float().flatten(0, 1), targets.flatten(0, 1), ignore_index=IGNORE)
        self.step(loss)
        return {"loss": float(loss.detach())}


@torch.no_grad()
def true_state_jaccard(model: SlotAutoencoder, clips: DataLoader, cond_frames: int,
                       target: int = TARGET_FRAME) -> float:
    """Frame-22 Jaccard of decoding the TRUE frame-22 states with objects from the observed frames."""
    from evals.metrics.jaccard import jaccard_score

    predicted, truth = [], []
    for batch in clips:
        masks = batch["mask"].long().clamp(min=0)
        latents = model.encode(batch["frames"], masks, cond_frames)
        log_probs, _ = model.decode(latents, latents.states[:, target:target + 1])
        predicted.append(log_probs[:, 0].argmax(1))
        truth.append(masks[:, target])
    return float(jaccard_score(torch.cat(predicted), torch.cat(truth)))


def run(cfg: DictConfig, ctx: DistContext) -> int:
    require_data_path(cfg)
    dataset = training_clips(cfg)
    stage = open_stage(cfg, ctx)
    task = SlotFirstStageTask(cfg, ctx)
    val = validation_clips(cfg, int(cfg.train.get("val_clips", 8)))
    val_loader = DataLoader(val, batch_size=stage.batch_size) if val is not None and len(val) else None
    val_every = int(cfg.train.get("val_every") or cfg.train.log_every)
    cond_frames = int(cfg.data.cond_frames)

    def on_log(step: int, final: bool) -> dict[str, float]:
        if val_loader is None or not ctx.is_main or (step % val_every and not final):
            return {}
        return {"frame22_true_state_jaccard": true_state_jaccard(task.inference_model(), val_loader, cond_frames)}

    return run_stage(stage, task, stage.batches(dataset, "slot stage-1 training clips"), on_log=on_log)
