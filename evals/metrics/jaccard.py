"""Competition Jaccard: torchmetrics multiclass IoU over 49 classes, on all masks stacked.

The score the competition (and its graders) used is `JaccardIndex(task="multiclass",
num_classes=49)` updated with every predicted/true mask: one confusion matrix over all pixels of
all videos, IoU per class, mean over the classes that occur in the predictions or the targets
(torchmetrics gives a class absent from both zero weight; background, class 0, counts).
Also reported: per-class IoU (NaN for absent classes) and the mean over videos of each video's
own Jaccard, which weighs every video equally.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import JaccardIndex

from tools.core.errors import UserError
from tools.data.classes import NUM_CLASSES



def check_mask_pair(pred: torch.Tensor, true: torch.Tensor) -> None:
    """Raise a UserError unless pred and true are integer [N,H,W] masks of one shape, ids 0..48."""
    if pred.shape != true.shape or pred.dim() != 3:
        raise UserError(f"predicted masks {tuple(pred.shape)} and true masks {tuple(true.shape)} must both "
                        f"be [N, H, W] of one shape (one frame-22 mask per video).")
    for name, masks in (("predicted", pred), ("true", true)):
        if masks.is_floating_point() or masks.is_complex() or masks.dtype == torch.bool:
            raise UserError(f"{name} masks have dtype {masks.dtype}; they must hold integer class ids (uint8).")
        if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) >= NUM_CLASSES):
            raise UserError(f"{name} masks hold ids {int(masks.min())}..{int(masks.max())}; "
                            f"valid class ids are 0..{NUM_CLASSES - 1}.")


def _batches(pred: torch.Tensor, true: torch.Tensor, batch_size: int, device: torch.device):
    for start in range(0, len(pred), batch_size):
        yield (pred[start:start + batch_size].to(device, torch.long),
               true[start:start + batch_size].to(device, torch.long))


def jaccard_score(pred: torch.Tensor, true: torch.Tensor, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> float:
    """The competition score: torchmetrics multiclass Jaccard over all masks stacked."""
    check_mask_pair(pred, true)
    # No cross-process sync: this scores the masks it is given; under torchrun, rank 0 may call it alone.
    metric = JaccardIndex(task="multiclass", num_classes=NUM_CLASSES, sync_on_compute=False).to(device)
    for pred_batch, true_batch in _batches(pred, true, batch_size, torch.device(device)):
        metric.update(pred_batch, true_batch)
    return float(metric.compute())


def confusion_per_video(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """[N, 49, 49] pixel counts, rows = true class, columns = predicted class."""
    n = len(pred)
    video = torch.arange(n, device=pred.device).view(n, 1)
    flat = (video * NUM_CLASSES + true.reshape(n, -1).long()) * NUM_CLASSES + pred.reshape(n, -1).long()
    counts = torch.bincount(flat.reshape(-1), minlength=n * NUM_CLASSES * NUM_CLASSES)
    return counts.view(n, NUM_CLASSES, NUM_CLASSES)


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """IoU per class from [..., 49, 49] confusion counts; NaN where a class is in neither mask."""
    intersection = confusion.diagonal(dim1=-2, dim2=-1).double()
    union = confusion.sum(-1).double() + confusion.sum(-2).double() - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))


def per_class_iou(pred: torch.Tensor, true: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """IoU of each of the 49 classes over all masks stacked; NaN for classes absent from both."""
    check_mask_pair(pred, true)
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for pred_batch, true_batch in _batches(pred, true, batch_size, torch.device("cpu")):
        confusion += confusion_per_video(pred_batch, true_batch).sum(0)
    return iou_from_confusion(confusion).numpy()


def per_video_jaccard(pred: torch.Tensor, true: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Each video's own multiclass Jaccard (torchmetrics' macro rule: mean over present classes)."""
    check_mask_pair(pred, true)
    scores = []
    for pred_batch, true_batch in _batches(pred, true, batch_size, torch.device("cpu")):
        scores.append(torch.nanmean(iou_from_confusion(confusion_per_video(pred_batch, true_batch)), dim=1))
    return torch.cat(scores).numpy() if scores else np.zeros(0)


@dataclass
class JaccardReport:
    """Competition score, per-class IoU (NaN = class absent) and the mean of per-video scores."""

    score: float
    per_class: np.ndarray
    mean_over_videos: float
    num_videos: int

    def lines(self, class_names: dict[int, str] | None = None) -> list[str]:
        """Human-readable summary: per-class IoU of present classes, then the two means."""
        rows = [f"class {index:2d} {class_names.get(index, '') if class_names else '':<24} IoU {iou:.4f}"
                for index, iou in enumerate(self.per_class) if not np.isnan(iou)]
        rows.append(f"mean over videos ({self.num_videos}): {self.mean_over_videos:.4f}")
        rows.append(f"jaccard (all masks stacked, competition): {self.score:.4f}")
        return rows


def jaccard_report(pred: torch.Tensor, true: torch.Tensor, batch_size: int = 256,
                   device: str | torch.device = "cpu") -> JaccardReport:
    """All three views of the Jaccard between predicted and true [N,H,W] masks."""
    score = jaccard_score(pred, true, batch_size, device)
    per_video = per_video_jaccard(pred, true, batch_size)
    return JaccardReport(score=score, per_class=per_class_iou(pred, true, batch_size),
                         mean_over_videos=float(per_video.mean()), num_videos=len(per_video))
