"""Pseudo-labels: segment every video of a split with a trained segmenter into mask.npy files.

Written to `<run_dir>/pseudo_labels/video_<id>/mask.npy`: uint8 (frames, H, W) at the videos' own resolution,
the same format as a labeled video's mask.npy. The dataset itself is never touched; stage 1 reads them beside
`<data_path>/<split>/video_<id>/` frames. Finished videos are skipped, so an interrupted run continues.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from models.segmenter import Segmenter
from tools.core.atomic import save_npy_atomic, write_text_atomic
from tools.core.distributed import DistContext, autocast, barrier
from tools.core.errors import UserError
from tools.core.runs import BEST_CHECKPOINT, LAST_CHECKPOINT, prepare_run_dir
from tools.data.clevrer import ClevrerDataset, read_frames
from tools.data.stage import require_data_path
from tools.predict.instance_vote import (ObjectJudge, edge_cut, instance_vote, judge_votes, load_vote_judge,
                                        vote_edge_threshold)
from tools.predict.segmenter_io import load_segmenter, video_log_probs

PSEUDO_LABEL_DIR = "pseudo_labels"


def default_pseudo_label_checkpoint(run_dir: Path) -> Path:
    for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):
        if (run_dir / name).is_file():
            return run_dir / name
    raise UserError(f"pseudo_label.checkpoint is not set and {run_dir} holds no {BEST_CHECKPOINT} or "
                    f"{LAST_CHECKPOINT}; train the segmenter with the same --id first or pass "
                    f"--config_mod pseudo_label.checkpoint=PATH")


@torch.no_grad()
def predict_video_masks(model: Segmenter, frames: torch.Tensor, ctx: DistContext, amp: str | None,
                        tta: bool, chunk: int, vote_min_pixels: int | None = None,
                        edge_threshold: float | None = None, judge: ObjectJudge | None = None) -> np.ndarray:
    """uint8 [T, H, W] class ids of float frames [T, 3, H, W], segmented `chunk` frames at a time; with
    vote_min_pixels, one class per object over the whole video (tools/predict/instance_vote.py), regions cut
    along a segmenter's contact edges at edge_threshold (None: no cut) and each object named with the object
    classifier's help when a judge is given, as prediction does."""
    with autocast(ctx, amp):
        if vote_min_pixels is None:
            return model.masks(frames, tta=tta, batch_size=chunk).numpy()
        scores, edges = video_log_probs(model, frames, max(1, chunk), tta)
    return instance_vote(scores, link_frames=True, min_pixels=vote_min_pixels, **judge_votes(judge, frames),
                         **edge_cut(edges, edge_threshold)).numpy()


def write_pseudo_labels(cfg: DictConfig, ctx: DistContext) -> int:
    """Segment every video of pseudo_label.split into <run_dir>/pseudo_labels/video_<id>/mask.npy."""
    root = Path(require_data_path(cfg)).expanduser()
    split = str(cfg.pseudo_label.split)
    entries = ClevrerDataset(root, split).entries
    run_dir = prepare_run_dir(cfg, ctx)
    checkpoint = Path(cfg.pseudo_label.checkpoint) if cfg.pseudo_label.get("checkpoint") \
        else default_pseudo_label_checkpoint(run_dir)
    model = load_segmenter(checkpoint, ctx.device)
    out_root = run_dir / PSEUDO_LABEL_DIR
    pending = [e for e in entries if not (out_root / f"video_{e.id}" / "mask.npy").exists()]
    todo = pending[ctx.rank::ctx.world_size]
    barrier(ctx)  # every rank has listed what is pending before any rank writes
    if ctx.is_main:
        print(f"pseudo-labels: {len(entries)} videos of {root / split} with {checkpoint}; "
              f"{len(entries) - len(pending)} already done; writing to {out_root}")
    tta = bool(cfg.train.get("tta"))
    chunk = int(cfg.pseudo_label.get("batch_frames") or 22)
    vote = int(cfg.pseudo_label.get("vote_min_pixels") or 1) if cfg.pseudo_label.get("instance_vote") else None
    edge_threshold = vote_edge_threshold(cfg.pseudo_label)
    judge = load_vote_judge(cfg.pseudo_label, ctx.device) if vote is not None else None
    for entry in tqdm(todo, disable=not ctx.is_main, desc="pseudo-labels", dynamic_ncols=True):
        masks = predict_video_masks(model, read_frames(entry.path), ctx, cfg.train.get("amp"), tta, chunk, vote,
                                    edge_threshold, judge)
        save_npy_atomic(out_root / f"video_{entry.id}" / "mask.npy", masks)
    barrier(ctx)
    if ctx.is_main:
        info = {"checkpoint": str(checkpoint), "data_path": str(root), "split": split, "videos": len(entries),
                "tta": tta, "instance_vote": vote is not None,
                "vote_edge_threshold": edge_threshold if vote is not None else None,
                "object_classifier": str(cfg.pseudo_label.object_classifier) if judge is not None else None,
                "format": "video_<id>/mask.npy: uint8 (frames, H, W) class ids 0..48"}
        write_text_atomic(out_root / "info.json", json.dumps(info, indent=2))
    return 0
