"""`--exp ddpm` with `model.backbone: slot_transformer`: diffusion over object trajectories (slot route, stage 2).

  python main.py --exp ddpm --id slots --pretrain_config configs/latent-diffusion/slots.yaml --data_path D \
      --first_model results/first_stage_slots_CLEVRER_42/model_last.pth

Trains on the cached slot trajectories of the labeled splits (tools/data/slot_cache.py): no frame is read.
Each step draws observed/target frame sets per clip (tools/diffusion/frame_sets.py, MCVD-style masking), so
one model predicts, interpolates and rolls out. The first stage is only needed to decode masks for validation
and prediction; the checkpoint stores it, so it is self-contained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from models.slot_transformer import SlotCond
from models.slots import STATE_DIM, STATE_NAMES, gather_frame, last_present
from tools.core.distributed import DistContext, average_gradients, train_autocast, unwrap
from tools.core.errors import UserError
from tools.data.classes import TARGET_FRAME
from tools.data.datasets import validation_clips
from tools.data.slot_cache import slot_trajectories
from tools.data.stage import require_data_path
from tools.diffusion.frame_sets import gather_frames, sample_frame_sets_batch
from tools.diffusion.gaussian import GaussianDiffusion
from tools.diffusion.precond import Precond
from tools.diffusion.slot_frames import (MotionPrior, measure_state_scales, pick, shift_by_motion, slot_condition,
                                        to_relative)
from tools.predict.first_stage_io import build_frozen_first_stage, first_stage_record
from tools.predict.slot_predictor import SlotPredictor, build_slot_denoiser, motion_prior
from tools.train.loop import open_stage, run_stage
from tools.train.task import StageTask, measure_scales_once


def draw_sets(cfg: DictConfig, batch_size: int, generator: torch.Generator):
    fcfg = cfg.frames
    return sample_frame_sets_batch(
        generator, batch_size, n_frames=int(fcfg.n_frames), n_obs_max=int(fcfg.n_obs_max), n_tgt=int(fcfg.n_tgt),
        prob_mask_cond=float(fcfg.prob_mask_cond), prob_mask_future=float(fcfg.prob_mask_future),
        prob_competition_case=float(fcfg.prob_competition_case))


def diffusion_inputs(batch: dict, sets: tuple, scales: torch.Tensor, device: torch.device, prior: MotionPrior):
    """(SlotCond, x0 in model units [B, Tt, S, D], valid [B, S]) of a batch of trajectories and frame sets."""
    obs_idx, tgt_idx, obs_keep = (s.to(device) for s in sets)
    states, codes = batch["states"].to(device), batch["codes"].to(device)
    observed = gather_frames(states, obs_idx)
    slot_codes = gather_frame(gather_frames(codes, obs_idx), last_present(observed, obs_keep))
    cond, slots = slot_condition(observed, slot_codes, obs_idx, obs_keep, tgt_idx, scales, prior)
    targets = pick(gather_frames(states, tgt_idx), slots, 2)
    return cond, to_relative(targets, cond.anchor, scales), cond.valid


def motion_l1(motion: torch.Tensor, x0: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean L1 error of the motion head's centroid offsets [B, Tt, S, 2] against the targets' (model units), over
    the real slots present in the target frame (relative presence 0; an object that has gone has -1 / scale)."""
    present = (x0[..., 0].abs() < 0.5) & valid[:, None]
    error = (motion.float() - x0[..., 1:3].float()).abs().sum(-1)
    return (error * present).sum() / present.sum().clamp(min=1)


class SlotDiffusionTask(StageTask):
    """One optimisation step of the slot transformer on a batch of cached trajectories."""

    def __init__(self, cfg: DictConfig, ctx: DistContext, record: dict[str, Any]) -> None:
        self.record = record
        self.first_stage = build_frozen_first_stage(record, ctx.device)
        super().__init__(cfg, ctx, build_slot_denoiser(cfg), ema_warmup=True)
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.precond = Precond(self.wrapped, self.diffusion)
        self.scales: list[float] | None = None
        self.prior = motion_prior(cfg)
        self.motion_weight = float(cfg.train.get("motion_loss_weight", 1.0))
        self.motion_warmup = int(cfg.train.get("motion_warmup_steps") or 0)
        if self.motion_warmup and unwrap(self.model).motion_head is None:
            raise UserError(f"train.motion_warmup_steps={self.motion_warmup} trains the motion head alone, but "
                            f"model.motion_head is false; set train.motion_warmup_steps=0 or model.motion_head=true")

    def measure_scales(self, batches: list[dict]) -> None:
        """Per-dimension scales of the relative targets, from a few batches, once per run."""
        generator = torch.Generator().manual_seed(int(self.cfg.run.seed))
        unit = torch.ones(STATE_DIM, device=self.ctx.device)
        rows = []
        for batch in batches:
            sets = draw_sets(self.cfg, batch["states"].shape[0], generator)
            _, x0, valid = diffusion_inputs(batch, sets, unit, self.ctx.device, self.prior)
            rows.append(x0[valid[:, None].expand(-1, x0.shape[1], -1)].cpu())
        self.scales = measure_state_scales(torch.cat(rows))

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # from the saved RNG
        sets = draw_sets(self.cfg, batch["states"].shape[0], generator)
        scales = torch.tensor(self.scales, device=self.ctx.device)
        cond, x0, valid = diffusion_inputs(batch, sets, scales, self.ctx.device, self.prior)
        self.model.train()
        if step < self.motion_warmup:
            return self.motion_warmup_step(cond, x0, valid)
        with torch.no_grad():  # the head's current guess: the diffusion works on the residual from it
            guess = unwrap(self.model).motion(cond)
        residual = shift_by_motion(x0, guess, -1.0)
        motions = []

        def network(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # one forward: denoiser and motion head
            out, motion = self.wrapped(x_t, self.precond.noise_input(t), cond, with_motion=True)
            motions.append(motion)
            return out

        with train_autocast(self.ctx, self.cfg.train):
            loss, per_sample, t = self.diffusion.training_loss(network, residual, generator,
                                                               weight=valid[:, None, :, None])
        logs = {}
        if motions[0] is not None:
            motion_loss = motion_l1(motions[0], x0, valid)
            loss = loss + self.motion_weight * motion_loss
            logs["motion_l1"] = motion_loss.item()
        self.step(loss)
        return {"loss": loss.item(), **logs, **self.diffusion.loss_by_bucket(t.cpu(), per_sample.cpu())}

    def motion_warmup_step(self, cond: SlotCond, x0: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
        """The motion head alone (the first train.motion_warmup_steps steps). A head step costs about a tenth
        of a whole-model step (9 vs 100 ms at batch 32 on 2 CPU cores), so the head reaches a good guess in
        seconds, and the diffusion starts on the residuals of a trained head rather than of a moving one. The
        head is called outside the DDP wrapper, so its gradients are averaged by hand."""
        head = unwrap(self.model).motion_head
        with train_autocast(self.ctx, self.cfg.train):
            loss = motion_l1(head(cond), x0, valid)
        self.step(loss, after_backward=lambda: average_gradients(head, self.ctx))
        return {"loss": loss.item(), "motion_l1": loss.item()}

    def state_dict(self) -> dict[str, Any]:
        return dict(super().state_dict(), slot_scales=self.scales, first_stage=self.record)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scales = list(state["slot_scales"])

    def scale_record(self) -> dict[str, float]:
        return dict(zip(STATE_NAMES, self.scales))

    def set_scale_record(self, record: dict[str, float]) -> None:
        self.scales = [float(record[name]) for name in STATE_NAMES]

    def predictor(self) -> SlotPredictor:
        """A sampler over the EMA weights (a separate copy; the training weights stay untouched)."""
        return SlotPredictor(self.first_stage, self.inference_model().eval(), self.cfg, self.scales, self.ctx.device)


@torch.no_grad()
def validate(task: SlotDiffusionTask, clips: DataLoader | None) -> dict[str, float]:
    """Frame-22 Jaccard of the sampled futures (true masks of frames 1-11, own generator: the training
    stream is never touched)."""
    if clips is None:
        return {}
    from evals.metrics.jaccard import jaccard_score

    predictor = task.predictor()
    generator = torch.Generator().manual_seed(int(task.cfg.run.seed))
    n_obs = int(task.cfg.data.cond_frames)
    predicted, truth = [], []
    for batch in clips:
        masks = batch["mask"].long().clamp(min=0)
        mask22, _ = predictor.predict(masks[:, :n_obs], None, [TARGET_FRAME], generator=generator,
                                      n_samples=int(task.cfg.train.get("val_samples", 4)), combine="mode")
        predicted.append(mask22[:, 0])
        truth.append(masks[:, TARGET_FRAME])
    return {"frame22_jaccard": float(jaccard_score(torch.cat(predicted), torch.cat(truth)))}


def trajectory_sources(cfg: DictConfig, root: str) -> list[tuple[str, str]]:
    """(root, split) pairs to train on: the labeled splits of --data_path, data.pseudo_label_path (the masks a
    segmenter gave D's unlabeled videos: its folder is read as a masks-only split), plus data.trajectory_path's
    data.trajectory_splits (e.g. thousands of masks-only generated videos; one path or a list of paths)."""
    sources = [(root, str(split)) for split in cfg.data.labeled_splits]
    pseudo = cfg.data.get("pseudo_label_path")
    if pseudo:
        folder = Path(str(pseudo))
        if not folder.is_dir():
            raise UserError(f"data.pseudo_label_path '{folder}' does not exist; write it with `python main.py --exp "
                            f"segment --data_path D --config_mod mode=pseudo_label` or set it to null")
        sources.append((str(folder.parent), folder.name))
    extra = cfg.data.get("trajectory_path")
    paths = [] if not extra else [extra] if isinstance(extra, str) else list(extra)
    for path in paths:
        if not Path(str(path)).is_dir():
            raise UserError(f"data.trajectory_path '{path}' does not exist; generate it with `python main.py --exp "
                            f"generate --data_path {path} --config_mod masks_only=true counts.train=2000 "
                            f"counts.val=0 counts.hidden=0` or set it to null")
        sources += [(str(path), str(split)) for split in cfg.data.get("trajectory_splits") or ["train"]]
    return sources


def run(cfg: DictConfig, ctx: DistContext) -> int:
    root = require_data_path(cfg)
    record = first_stage_record(cfg.run.get("first_model"), cfg)
    if record["config"]["model"].get("type") != "slots":
        raise UserError(f"--first_model '{cfg.run.get('first_model')}' is not a slot first stage (model.type "
                        f"slots); train one with --pretrain_config configs/autoencoder/slots.yaml")
    cache_dir = Path(str(cfg.run.results_dir)) / "slot_cache"
    sources = trajectory_sources(cfg, root)
    dataset = slot_trajectories(sources, cache_dir, progress=ctx.is_main)
    if ctx.is_main:
        counts = ", ".join(f"{n} from {Path(r) / s}" for (r, s), n in zip(sources, dataset.part_sizes))
        print(f"stage-2 trajectories: {len(dataset)} ({counts})")
    stage = open_stage(cfg, ctx)
    task = SlotDiffusionTask(cfg, ctx, record)
    make_batches = stage.batches(dataset, "slot trajectories")
    measure_scales_once(task, stage, make_batches, default_batches=8)
    val = validation_clips(cfg, int(cfg.train.get("val_clips", 8)))
    val_loader = DataLoader(val, batch_size=min(stage.batch_size, 8)) if val is not None and len(val) else None
    val_every = int(cfg.train.get("sample_every") or cfg.train.log_every)
    return run_stage(stage, task, make_batches,
                     on_log=lambda step, final: validate(task, val_loader)
                     if ctx.is_main and (step % val_every == 0 or final) else {})
