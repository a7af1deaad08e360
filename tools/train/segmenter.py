"""`--exp segment`: train the per-frame segmenter, or (mode: pseudo_label) write masks for unlabeled videos.

Training treats every frame of every labeled video of `data.train_splits` as an independent image (decoded once
into memory with `data.cache`), with random horizontal flips and the photometric jitter of
tools/data/frames.py (no hue jitter: colour is part of the class id), CE + Dice (+ factor CE for the
factorised head, `model.head`),
AdamW, optional EMA, bf16 autocast on GPU (and on a CPU with native bf16 when `train.cpu_bf16`) and DDP under
torchrun. Every `train.val_every` steps the
Jaccard index (torchmetrics, multiclass, 49 classes, as the competition scored it) over up to
`data.val_frames` evenly spread frames of `data.val_split` is logged as `val/jaccard`, and the best
weights so far are kept in `model_best.pth` beside `model_last.pth`.

Pseudo-labels (`--config_mod mode=pseudo_label [pseudo_label.checkpoint=PATH]`) are written by
tools/predict/pseudo_labels.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from models.segmenter import Segmenter
from tools.core.checkpoint import save_checkpoint
from tools.core.config import to_plain
from tools.core.distributed import DistContext, autocast, barrier, make_grad_scaler, unwrap, wrap_model
from tools.core.errors import UserError
from tools.core.logger import RunLogger
from tools.core.runs import BEST_CHECKPOINT
from tools.data.classes import NUM_CLASSES, colorize_mask
from tools.data.frames import LabeledFrames, augment_batch, evenly_spread
from tools.data.stage import require_data_path
from tools.predict.segmenter_io import build_task_segmenter, load_local_encoder_weights
from tools.train.loop import open_stage, optimizer_step, run_stage, validation_interval
from tools.train.ema import make_ema
from tools.train.seg_losses import SegmentationLoss

IMAGE_GRID_FRAMES = 4


class SegmenterTask:
    """The TrainTask of the segmenter: model (DDP-wrapped when distributed), AdamW, EMA, loss."""

    def __init__(self, cfg: DictConfig, ctx: DistContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        bare = build_task_segmenter(cfg.model)
        if cfg.model.get("encoder_weights_path"):
            load_local_encoder_weights(bare.net.encoder, cfg.model.encoder_weights_path)
        if ctx.device.type == "cpu":  # oneDNN's convolutions are about 20% faster on NHWC tensors
            bare = bare.to(memory_format=torch.channels_last)
        self.model = wrap_model(bare.to(ctx.device), ctx)
        self.optimizer = torch.optim.AdamW(unwrap(self.model).parameters(), lr=float(cfg.train.lr),
                                           weight_decay=float(cfg.train.weight_decay))
        self.scaler = make_grad_scaler(ctx, cfg.train.get("amp"))
        self.ema = make_ema(self.model, float(cfg.train.get("ema_decay") or 0), warmup=True)
        self.loss = SegmentationLoss(cfg.loss.ce_weight, cfg.loss.dice_weight, cfg.loss.get("factor_weight", 1.0),
                                     cfg.loss.get("boundary_weight", 1.0))
        self.augment = cfg.data.get("augment") or {}
        self.best_jaccard = -1.0

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        rgb = batch["image"].to(self.ctx.device, non_blocking=True)
        mask = batch["mask"].to(self.ctx.device, non_blocking=True)
        rgb, mask = augment_batch(rgb, mask, self.augment)
        self.model.train()
        with autocast(self.ctx, self.cfg.train.get("amp"), bool(self.cfg.train.get("cpu_bf16"))):
            scores, factors = self.model(rgb, with_factors=True)
        loss, parts = self.loss(scores.float(), mask, {name: f.float() for name, f in factors.items()})
        optimizer_step(self.optimizer, self.scaler, loss, self.model.parameters(),
                       float(self.cfg.train.get("grad_clip") or 0))
        if self.ema is not None:
            self.ema.update(self.model)
        return {"loss": float(loss.detach()), **parts}

    def inference_model(self) -> Segmenter:
        """The weights prediction would use: a copy holding the EMA weights, or the live model."""
        return self.ema.inference_copy(self.model) if self.ema is not None else unwrap(self.model)

    def state_dict(self) -> dict[str, Any]:
        state = {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "best_jaccard": float(self.best_jaccard)}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state.get("scaler") or {})
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.best_jaccard = float(state.get("best_jaccard", -1.0))


@torch.no_grad()
def evaluate_jaccard(model: Segmenter, loader: DataLoader, ctx: DistContext, amp: str | None = None,
                     tta: bool = False, size: tuple[int, int] | None = None) -> float:
    """Multiclass Jaccard (49 classes, macro over classes present) of `model` on `loader`, over all ranks."""
    from torchmetrics.classification import MulticlassJaccardIndex

    metric = MulticlassJaccardIndex(num_classes=NUM_CLASSES).to(ctx.device)
    was_training = model.training
    model.eval()
    for batch in loader:
        rgb = batch["image"].to(ctx.device)
        with autocast(ctx, amp):
            scores = model.segment(rgb, tta=tta, size=size)
        metric.update(scores.argmax(1), batch["mask"].to(ctx.device))
    model.train(was_training)
    return float(metric.compute())


class Validation:
    """Scores the task every `train.val_every` steps and keeps the best weights in model_best.pth."""

    def __init__(self, task: SegmenterTask, dataset: LabeledFrames, cfg: DictConfig, run_dir: Path,
                 ctx: DistContext, batch_size: int) -> None:
        self.task, self.cfg, self.run_dir, self.ctx = task, cfg, run_dir, ctx
        chosen = evenly_spread(len(dataset), cfg.data.get("val_frames"))
        self.grid_items = [dataset[i] for i in chosen[:IMAGE_GRID_FRAMES]] if ctx.is_main else []
        mine = Subset(dataset, chosen[ctx.rank::ctx.world_size])
        self.loader = DataLoader(mine, batch_size=batch_size, shuffle=False,
                                 num_workers=int(cfg.train.get("num_workers") or 0))
        self.val_every = validation_interval(cfg)

    def on_log(self, step: int, final: bool = False) -> dict[str, float] | None:
        if step % self.val_every and not final:
            return None
        jaccard = evaluate_jaccard(self.task.inference_model(), self.loader, self.ctx,
                                   self.cfg.train.get("amp"), bool(self.cfg.train.get("tta")))
        if jaccard > self.task.best_jaccard:
            self.task.best_jaccard = jaccard
            if self.ctx.is_main:
                state = dict(self.task.state_dict(), step=step, val_jaccard=jaccard, config=to_plain(self.cfg))
                save_checkpoint(state, self.run_dir / BEST_CHECKPOINT)
        barrier(self.ctx)
        return {"jaccard": jaccard, "best_jaccard": self.task.best_jaccard}

    @torch.no_grad()
    def on_images(self, step: int, logger: RunLogger) -> None:
        """A grid in TensorBoard: inputs, true masks and predicted masks (colour-coded), one row each."""
        from torchvision.utils import make_grid

        if not self.grid_items:
            return
        rgb = torch.stack([item["image"] for item in self.grid_items])
        truth = torch.stack([item["mask"] for item in self.grid_items])
        model = self.task.inference_model()
        model.eval()
        with autocast(self.ctx, self.cfg.train.get("amp")):
            predicted = model.segment(rgb.to(self.ctx.device)).argmax(1).cpu()
        model.train()
        as_images = [torch.from_numpy(colorize_mask(m)).permute(0, 3, 1, 2).float() / 255 for m in (truth, predicted)]
        grid = make_grid(torch.cat([rgb, *as_images]), nrow=len(self.grid_items), padding=2)
        logger.log_image("val/input_truth_prediction", grid, step)


def train_segmenter(cfg: DictConfig, ctx: DistContext) -> int:
    root = Path(require_data_path(cfg)).expanduser()
    size = (int(cfg.data.height), int(cfg.data.width))
    cache = bool(cfg.data.get("cache", False))
    train_frames = LabeledFrames(root, list(cfg.data.train_splits), size, cache=cache,
                                 max_videos=cfg.data.get("max_train_videos"))
    val_frames = LabeledFrames(root, [cfg.data.val_split], size) if cfg.data.get("val_split") else None
    stage = open_stage(cfg, ctx)
    task = SegmenterTask(cfg, ctx)
    validation = Validation(task, val_frames, cfg, stage.run_dir, ctx, stage.batch_size) if val_frames else None
    if ctx.is_main:
        print(f"segmenter: {len(train_frames)} training frames from {len(train_frames.entries)} videos, "
              f"{len(validation.loader.dataset) if validation else 0} validation frames; run folder {stage.run_dir}")
    return run_stage(stage, task, stage.batches(train_frames, "segmenter training frames"),
                     on_log=validation.on_log if validation else None,
                     on_images=(lambda step: validation.on_images(step, stage.logger)) if validation else None)


def run(cfg: DictConfig, ctx: DistContext) -> int:
    """Entry of `--exp segment`: train (mode: train) or write pseudo-labels (mode: pseudo_label)."""
    mode = str(cfg.get("mode", "train"))
    if mode == "train":
        return train_segmenter(cfg, ctx)
    if mode == "pseudo_label":
        from tools.predict.pseudo_labels import write_pseudo_labels

        return write_pseudo_labels(cfg, ctx)
    raise UserError(f"mode={mode!r} is unknown for --exp segment; use mode=train or mode=pseudo_label")
