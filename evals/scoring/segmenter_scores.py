"""Scores of a trained segmenter on the labeled videos of a split: per-frame Jaccard with and without the
instance vote, and copy-frame-11 with its masks against copy-frame-11 with the true masks.

All Jaccards are the competition's (evals/metrics/jaccard.py: torchmetrics multiclass, 49 classes, masks stacked).
Masks are scored at the videos' own resolution; the network runs at its trained size and its class scores are
upsampled (Segmenter.segment(size=trained_size)).

Beside the Jaccards, `factor_scores` splits the per-frame errors into the class id's factors: objectness IoU
(object vs background) and, on true object pixels predicted as some object, how often the predicted class has
the right shape, material and colour. On real frames this says which factor fails to transfer.

`segmenter_rows` is what a report calls: (label, value) rows for one split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from evals.metrics.jaccard import jaccard_score
from evals.scoring.motion_baselines import friction_velocity_prediction
from models.segmenter import Segmenter
from tools.data.classes import NUM_CLASSES, NUM_OBSERVED, TARGET_FRAME, class_indices
from tools.data.clevrer import list_videos, read_frames, read_mask
from tools.predict.instance_vote import EDGE_THRESHOLD, ObjectJudge, edge_cut, instance_vote, judge_votes
from tools.predict.segmenter_io import video_log_probs

VOTE_MIN_PIXELS = 8  # full-resolution pixels; as predict.vote_min_pixels
ROW_LABELS = {
    "per_frame": "segmenter, per-frame Jaccard (argmax)",
    "per_frame_vote_frame": "segmenter + instance vote per frame, per-frame Jaccard",
    "per_frame_vote_video": "segmenter + instance vote linked over each video's frames, per-frame Jaccard",
    "copy11_truth": "copy frame 11 (true masks), frame-22 Jaccard",
    "copy11_segmenter": "copy frame 11 (segmenter masks, argmax), frame-22 Jaccard",
    "copy11_segmenter_vote": "copy frame 11 (segmenter masks, instance vote over frames 1-11), frame-22 Jaccard",
    "per_frame_vote_objects": "segmenter + object classifier in the instance vote linked over each video's "
                              "frames, per-frame Jaccard",
    "copy11_segmenter_vote_objects": "copy frame 11 (segmenter masks, instance vote with the object classifier "
                                     "over frames 1-11), frame-22 Jaccard",
    "friction_segmenter": "friction rule on the segmenter masks of frames 1-11 as prediction reads them (instance "
                          "vote, with the object classifier when given), frame-22 Jaccard",
}

FACTOR_LABELS = {
    "objectness_iou": "objectness IoU (object vs background pixels)",
    "shape_accuracy": "shape right, on true object pixels predicted as an object",
    "material_accuracy": "material right, on true object pixels predicted as an object",
    "colour_accuracy": "colour right, on true object pixels predicted as an object",
}


def factor_scores(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Objectness IoU and shape / material / colour accuracies (FACTOR_LABELS) of class masks [N, H, W]."""
    predicted, truth = predicted.long(), truth.long()
    is_object, said_object = truth > 0, predicted > 0
    union = int((is_object | said_object).sum())
    scores = {"objectness_iou": int((is_object & said_object).sum()) / union if union else float("nan")}
    # Row c of `table` is class c's (shape, material, colour); background's row is never looked up below.
    table = torch.tensor([(0, 0, 0)] + [class_indices(c) for c in range(1, NUM_CLASSES)])
    both = is_object & said_object
    true_factors, predicted_factors = table[truth[both]], table[predicted[both]]
    for column, name in enumerate(("shape", "material", "colour")):
        right = (true_factors[:, column] == predicted_factors[:, column]).double()
        scores[f"{name}_accuracy"] = float(right.mean()) if len(right) else float("nan")
    return scores


@dataclass
class _Collected:
    predictions: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    truths: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def add(self, name: str, predicted: torch.Tensor, truth: torch.Tensor) -> None:
        self.predictions.setdefault(name, []).append(predicted.to(torch.uint8))
        self.truths.setdefault(name, []).append(truth.to(torch.uint8))

    def scores(self) -> dict[str, float]:
        scores = {name: jaccard_score(torch.cat(self.predictions[name]), torch.cat(self.truths[name]))
                  for name in self.predictions}
        if "per_frame" in self.predictions:
            scores.update(factor_scores(torch.cat(self.predictions["per_frame"]), torch.cat(self.truths["per_frame"])))
        return scores


def _score_video(segmenter: Segmenter, path: Path, collected: _Collected, vote: bool, min_pixels: int,
                 judge: ObjectJudge | None = None, edge_threshold: float | None = EDGE_THRESHOLD,
                 tta: bool = False) -> None:
    frames, masks = read_frames(path), read_mask(path)
    log_probs, edges = video_log_probs(segmenter, frames, tta=tta)

    def cut(frame_count: int | None = None) -> dict:
        """The vote's edge cut over the first frame_count frames."""
        return edge_cut(None if edges is None else edges[:frame_count], edge_threshold)

    collected.add("per_frame", log_probs.argmax(1), masks)
    last_observed, target = NUM_OBSERVED - 1, masks[TARGET_FRAME][None]
    collected.add("copy11_truth", masks[last_observed][None], target)
    collected.add("copy11_segmenter", log_probs[last_observed].argmax(0)[None], target)
    if vote:
        collected.add("per_frame_vote_frame",
                      instance_vote(log_probs, link_frames=False, min_pixels=min_pixels, **cut()), masks)
        collected.add("per_frame_vote_video",
                      instance_vote(log_probs, link_frames=True, min_pixels=min_pixels, **cut()), masks)
        observed = instance_vote(log_probs[:NUM_OBSERVED], link_frames=True, min_pixels=min_pixels,
                                 **cut(NUM_OBSERVED))
        collected.add("copy11_segmenter_vote", observed[last_observed][None], target)
    if vote and judge is not None:
        named = instance_vote(log_probs, link_frames=True, min_pixels=min_pixels, **judge_votes(judge, frames),
                              **cut())
        collected.add("per_frame_vote_objects", named, masks)
        observed = instance_vote(log_probs[:NUM_OBSERVED], link_frames=True, min_pixels=min_pixels,
                                 **judge_votes(judge, frames[:NUM_OBSERVED]),
                                 **cut(NUM_OBSERVED))  # as prediction runs it: frames 1-11
        collected.add("copy11_segmenter_vote_objects", observed[last_observed][None], target)
    if vote:  # the rule the end-to-end row must beat, from the very masks prediction starts from
        collected.add("friction_segmenter", friction_velocity_prediction(observed)[None], target)


def score_segmenter(segmenter: Segmenter, root: str | Path, split: str, video_ids: Sequence[int] | None = None,
                    vote: bool = True, min_pixels: int = VOTE_MIN_PIXELS, progress: bool = True,
                    judge: ObjectJudge | None = None, edge_threshold: float | None = EDGE_THRESHOLD,
                    tta: bool = False) -> dict[str, float]:
    """Jaccards keyed as ROW_LABELS, and the factor scores of the per-frame masks keyed as FACTOR_LABELS, over the
    labeled videos of root/split (or those of `video_ids`). With an object judge (an object classifier and its
    weight, tools/predict/instance_vote.py) the vote is also run with it, on frames 1-11 as prediction does.
    tta: the flip test-time augmentation (as predict.tta)."""
    entries = [e for e in list_videos(root, split) if e.has_mask and (video_ids is None or e.id in set(video_ids))]
    collected = _Collected()
    segmenter.eval()
    for entry in tqdm(entries, desc=f"segmenter scores ({split})", disable=not progress, unit="video"):
        _score_video(segmenter, entry.path, collected, vote, min_pixels, judge, edge_threshold, tta)
    return collected.scores()


def segmenter_rows(segmenter: Segmenter, root: str | Path, split: str, video_ids: Sequence[int] | None = None,
                   min_pixels: int = VOTE_MIN_PIXELS, judge: ObjectJudge | None = None, tta: bool = False
                   ) -> list[tuple[str, float]]:
    """(label, Jaccard) rows for a report: per-frame with and without the vote (and with the object classifier
    in it), copy frame 11 seg vs true."""
    scores = score_segmenter(segmenter, root, split, video_ids, True, min_pixels, progress=False, judge=judge,
                             tta=tta)
    return [(ROW_LABELS[name], scores[name]) for name in ROW_LABELS if name in scores]
