"""`--exp objects`: train the object classifier (models/object_classifier.py) on crops from true masks.

It names each object's shape, material and colour from a full-resolution, scale-normalised crop around it
(tools/data/object_crops.py). Prediction adds its evidence, summed over an object's frames, to the segmenter's
in the instance vote (`predict.object_classifier`, tools/predict/instance_vote.py), where the segmenter's
mistakes are whole objects with a wrong shape or material.

Training: every object (>= data.min_pixels) of every frame of the labeled videos of `data.train_splits`, cropped
once into memory; jittered views (scale, shift, flip, the segmenter's photometric jitter, masks made to look like
a segmenter's); cross-entropy per factor; AdamW, EMA, bf16 autocast on GPU (and on a CPU with native bf16 when
`train.cpu_bf16`); DDP under torchrun. Every `train.val_every` steps the accuracy over the objects of
`data.val_split` (all three factors right, and each alone) is logged as val/accuracy, val/shape, ... and the
best weights so far are kept in model_best.pth beside model_last.pth.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from models.object_classifier import FACTORS, ObjectClassifier
from tools.core.checkpoint import load_checkpoint, save_checkpoint, weights_for_inference
from tools.core.config import to_plain
from tools.core.distributed import DistContext, autocast, barrier
from tools.core.errors import UserError
from tools.core.runs import BEST_CHECKPOINT
from tools.data.classes import COLORS, MATERIALS, SHAPES
from tools.data.object_crops import ObjectCrops, augment_crops, view_crops
from tools.data.stage import require_data_path
from tools.train.loop import open_stage, run_stage, validation_interval
from tools.train.task import StageTask

FACTOR_SIZES = (len(SHAPES), len(MATERIALS), len(COLORS))


def build_object_classifier(model_cfg: Mapping[str, Any]) -> ObjectClassifier:
    try:
        return ObjectClassifier(FACTOR_SIZES, tuple(int(c) for c in model_cfg.get("channels") or (32, 64, 128)))
    except ValueError as err:
        raise UserError(f"{err}; fix the object classifier config's model section") from err


def load_object_classifier(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> ObjectClassifier:
    """A trained ObjectClassifier in eval mode from an `--exp objects` checkpoint (EMA weights if it has them)."""
    state = load_checkpoint(checkpoint_path, map_location="cpu")
    config = state.get("config") or {}
    if (config.get("model") or {}).get("kind") != "object_classifier":
        raise UserError(f"checkpoint '{checkpoint_path}' is not an object classifier checkpoint (its config has "
                        f"no model.kind=object_classifier); pass a model_best.pth or model_last.pth of --exp objects")
    model = build_object_classifier(config["model"])
    model.load_state_dict(weights_for_inference(state), strict=True)
    return model.to(device).eval()


class ObjectClassifierTask(StageTask):
    """The TrainTask: StageTask's model, DDP wrapper, AdamW, EMA and checkpoint state, cross-entropy per factor."""

    def __init__(self, cfg: DictConfig, ctx: DistContext) -> None:
        model = build_object_classifier(cfg.model)
        if ctx.device.type == "cpu":  # oneDNN's convolutions are faster on NHWC tensors
            model = model.to(memory_format=torch.channels_last)
        super().__init__(cfg, ctx, model, ema_warmup=True)
        self.augment = dict(cfg.data.get("augment") or {})
        self.best_accuracy = -1.0

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        crops = augment_crops(batch["crop"], self.augment).to(self.ctx.device, non_blocking=True)
        self.wrapped.train()
        with autocast(self.ctx, self.cfg.train.get("amp"), bool(self.cfg.train.get("cpu_bf16"))):
            logits = self.wrapped(crops)
        losses = {name: F.cross_entropy(logits[name].float(), batch[name].to(self.ctx.device)) for name in FACTORS}
        loss = sum(losses.values())
        self.step(loss)
        return {"loss": float(loss.detach()), **{f"ce_{name}": float(value.detach()) for name, value in losses.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_accuracy": float(self.best_accuracy)}

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        super().load_state_dict(state, weights_only)
        self.best_accuracy = float(state.get("best_accuracy", -1.0))


@torch.no_grad()
def factor_accuracy(model: ObjectClassifier, crops: ObjectCrops, device: torch.device, batch_size: int = 512
                    ) -> dict[str, float]:
    """Accuracy over stored crops of each factor and of all three together (the class), unjittered views."""
    was_training = model.training
    model.eval()
    predicted = {name: [] for name in FACTORS}
    for start in range(0, len(crops), batch_size):
        views = view_crops(crops.crops[start:start + batch_size].float().div_(255)).to(device)
        for name, logits in model(views).items():
            predicted[name].append(logits.argmax(1).cpu())
    model.train(was_training)
    right = {name: torch.cat(predicted[name]) == crops.factors[:, column] for column, name in enumerate(FACTORS)}
    scores = {name: float(hits.float().mean()) for name, hits in right.items()}
    scores["accuracy"] = float((right["shape"] & right["material"] & right["colour"]).float().mean())
    return scores


class Validation:
    """Scores the task every `train.val_every` steps (on rank 0) and keeps the best weights in model_best.pth."""

    def __init__(self, task: ObjectClassifierTask, crops: ObjectCrops, cfg: DictConfig, run_dir: Path,
                 ctx: DistContext) -> None:
        self.task, self.crops, self.cfg, self.run_dir, self.ctx = task, crops, cfg, run_dir, ctx
        self.val_every = validation_interval(cfg)

    def on_log(self, step: int, final: bool = False) -> dict[str, float] | None:
        if step % self.val_every and not final:
            return None
        scores = factor_accuracy(self.task.inference_model(), self.crops, self.ctx.device) if self.ctx.is_main else {}
        if self.ctx.is_main and scores["accuracy"] > self.task.best_accuracy:
            self.task.best_accuracy = scores["accuracy"]
            state = dict(self.task.state_dict(), step=step, val_accuracy=scores["accuracy"], config=to_plain(self.cfg))
            save_checkpoint(state, self.run_dir / BEST_CHECKPOINT)
        barrier(self.ctx)
        return {**scores, "best_accuracy": self.task.best_accuracy} if self.ctx.is_main else None


def run(cfg: DictConfig, ctx: DistContext) -> int:
    """Entry of `--exp objects`."""
    if (cfg.model.get("kind") or "object_classifier") != "object_classifier":
        raise UserError(f"model.kind={cfg.model.kind!r}: --exp objects trains model.kind=object_classifier; "
                        f"use configs/segmentation/objects.yaml")
    cfg.model.kind = "object_classifier"
    root = Path(require_data_path(cfg)).expanduser()
    min_pixels = int(cfg.data.get("min_pixels") or 1)
    train_crops = ObjectCrops(root, list(cfg.data.train_splits), min_pixels, cfg.data.get("max_train_videos"),
                              desc="cropping training objects")
    val_crops = ObjectCrops(root, [cfg.data.val_split], min_pixels, desc="cropping validation objects") \
        if cfg.data.get("val_split") else None
    stage = open_stage(cfg, ctx)
    task = ObjectClassifierTask(cfg, ctx)
    validation = Validation(task, val_crops, cfg, stage.run_dir, ctx) if val_crops is not None else None
    if ctx.is_main:
        print(f"object classifier: {len(train_crops)} training objects, "
              f"{len(val_crops) if val_crops is not None else 0} validation objects; run folder {stage.run_dir}")
    return run_stage(stage, task, stage.batches(train_crops, "object crops"),
                     on_log=validation.on_log if validation else None)
