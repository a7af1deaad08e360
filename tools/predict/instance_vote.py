"""One class per object: turn per-pixel class log-probabilities into instance-consistent masks.

In this data a class is an instance (each shape/material/colour occurs at most once per video), so a
segmenter's per-pixel argmax, which may paint one object in two classes or two objects in one, can be
cleaned up without any learning:

1. Per frame, the foreground (p(background) < 0.5) is cut into connected components. Touching objects would
   form one component (10-14% of components do in real and generated masks). With a segmenter's contact-edge
   probability (`model.boundary`), a foreground region is cut along the pixels where it exceeds
   `edge_threshold`: when the cut leaves two or more pieces of at least `min_piece` pixels, every pixel of the
   region joins its nearest piece. The cut stands only if its pieces' best classes differ (else they are one
   object with an inner edge). Without an edge map a component is instead a connected region of one *colour*
   (the colour marginal's argmax), which leaves 1-2% of components merged; with one, splitting by colour too
   (`split='colour'`) costs more than it saves, because on real frames the segmenter's colour wavers inside an
   object and each waver became a fragment that took some other class (measured: per-frame Jaccard with the
   object classifier 0.80 -> 0.88 on generated val, 0.53-0.70 -> 0.82-0.87 on the 66 real frames). `split`
   'auto' (the default) picks 'none' with an edge map and 'colour' without. Fragments under `min_pixels` join
   the neighbouring component they share most border with, or become background.
2. Consecutive frames' components are linked when each is the other's largest overlap, so a track holds at
   most one component per frame; without linking every component is its own track.
3. Every track scores each object class by its log-likelihood, the sum of the class's log-probabilities over
   the track's pixels in all its frames (so each frame votes with its evidence; a single component takes the
   class maximising its summed log-probabilities), turned into a posterior over the 48 classes.
   With an object classifier (`object_scores`, `object_evidence`; models/object_classifier.py), each frame's
   component gets two votes instead: the segmenter's mean pixel log-probability (times `segmenter_weight`) and the
   classifier's log-probability from a full-resolution crop around it. The segmenter's mistakes are whole objects
   with a wrong shape or material, which a look at the object tells apart better than its pixels do.
4. Classes are handed out greedily, most probable (track, class) first: a track takes its best class that no
   track sharing a frame with it holds yet, so a class claimed twice goes to the more likely track and the
   other takes its next best class.

A deterministic function of the scores (ties broken by track and class order); tests/test_instance_vote.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from models.object_classifier import FACTORS
from tools.data.classes import COLORS, NUM_CLASSES, class_indices

SPLITS = ("auto", "colour", "none")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Component maps [H, W] of a video's frames -> per frame, log p(class) [n components, 48] of another judge.
ObjectScores = Callable[[list[np.ndarray]], list[np.ndarray]]


def colour_of_class() -> np.ndarray:
    """int [48]: the colour index of object classes 1..48."""
    return np.array([class_indices(c)[2] for c in range(1, NUM_CLASSES)])


EDGE_THRESHOLD = 0.5
MIN_PIECE = 40


def frame_components(log_probs: np.ndarray, split: str = "auto", min_pixels: int = 1,
                     edge: np.ndarray | None = None, edge_threshold: float = EDGE_THRESHOLD,
                     min_piece: int = MIN_PIECE) -> np.ndarray:
    """int32 labels [H, W] (0 = background, 1..n components) of one frame's log-probabilities [49, H, W];
    edge: the contact-edge probability [H, W] that cuts touching objects apart (None: no cut)."""
    return _frame_regions(log_probs, split, min_pixels, edge, edge_threshold, min_piece)[1]


def _frame_regions(log_probs: np.ndarray, split: str, min_pixels: int, edge: np.ndarray | None,
                   edge_threshold: float = EDGE_THRESHOLD, min_piece: int = MIN_PIECE
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(whole, cut): a frame's components without and with the edge cut (the same array without an edge), from
    one pass over the class scores."""
    if split not in SPLITS:
        raise ValueError(f"instance vote split={split!r} is unknown; use one of {SPLITS}")
    if split == "auto":
        split = "colour" if edge is None else "none"
    objects = log_probs[1:]
    # logaddexp keeps classes suppressed to -inf (predict.suppress_absent) harmless.
    foreground = np.logaddexp.reduce(objects, axis=0) > log_probs[0]
    if split == "none":
        labels, _ = ndimage.label(foreground, structure=_EIGHT_CONNECTED)
    else:
        labels = _colour_components(objects, foreground)
    whole = _absorb_fragments(labels, min_pixels)
    if edge is None:
        return whole, whole
    return whole, _absorb_fragments(cut_along_edges(labels, edge > edge_threshold, min_piece), min_pixels)


def cut_along_edges(labels: np.ndarray, edge: np.ndarray, min_piece: int = MIN_PIECE) -> np.ndarray:
    """Components [H, W] with each one cut by the boolean edge map [H, W] where that leaves two or more pieces
    of at least min_piece pixels; the region's other pixels (the edge itself, slivers) join the nearest piece.
    A region the edge does not cut in two keeps its id order; ids stay consecutive."""
    out = np.zeros_like(labels)
    count = 0
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        region = labels[box] == index + 1
        pieces, n = ndimage.label(region & ~edge[box], structure=_EIGHT_CONNECTED)
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)
        big = np.flatnonzero(sizes >= min_piece)
        big = big[big > 0]
        window = out[box]
        if len(big) < 2:
            count += 1
            window[region] = count
            continue
        kept = np.isin(pieces, big)
        # Index of the nearest kept pixel for every pixel of the window (the edge and slivers included).
        nearest = ndimage.distance_transform_edt(~kept, return_distances=False, return_indices=True)
        owner = pieces[nearest[0], nearest[1]]
        renumber = np.zeros(n + 1, dtype=labels.dtype)
        renumber[big] = np.arange(count + 1, count + 1 + len(big))
        window[region] = renumber[owner[region]]
        count += len(big)
    return out


def _colour_components(objects: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    colours = colour_of_class()
    # The max over a colour's classes ranks colours like their marginal does when one class dominates, and
    # needs no exponentials over all 48 maps.
    per_colour = np.stack([objects[colours == k].max(0) for k in range(len(COLORS))])
    best_colour = per_colour.argmax(0)
    labels = np.zeros(foreground.shape, dtype=np.int32)
    count = 0
    for colour in range(len(COLORS)):
        found, n = ndimage.label(foreground & (best_colour == colour), structure=_EIGHT_CONNECTED)
        labels[found > 0] = found[found > 0] + count
        count += n
    return labels


def _absorb_fragments(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Components under min_pixels go to the touching component with the longest shared border, else to 0."""
    if min_pixels <= 1 or labels.max() == 0:
        return labels
    sizes = np.bincount(labels.ravel())
    small = (sizes < min_pixels) & (np.arange(len(sizes)) > 0)
    if not small.any():
        return labels
    # Border pixel pairs (fragment, large component) over the 8 neighbour offsets, counted in one bincount.
    padded = np.pad(labels, 1)
    height, width = labels.shape
    pairs = []
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
        neighbour = padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        keep = small[labels] & (neighbour > 0) & ~small[neighbour]
        pairs.append(labels[keep] * len(sizes) + neighbour[keep])
    counts = np.bincount(np.concatenate(pairs), minlength=len(sizes) ** 2).reshape(len(sizes), len(sizes))
    target = np.arange(len(sizes))
    target[small] = np.where(counts[small].max(1) > 0, counts[small].argmax(1), 0)
    _, relabelled = np.unique(target[labels], return_inverse=True)  # consecutive ids, background stays 0
    return relabelled.reshape(labels.shape).astype(np.int32)


def component_scores(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float [n, 48]: each component's summed log-probability of each object class (its log-likelihood)."""
    n = int(labels.max())
    flat_labels = labels.ravel()
    sums = np.stack([np.bincount(flat_labels, weights=log_probs[c].ravel(), minlength=n + 1)
                     for c in range(1, NUM_CLASSES)], axis=1)
    return sums[1:]


def class_posteriors(log_likelihoods: np.ndarray) -> np.ndarray:
    """log P(class | all of a track's pixels) [n, 48] from summed log-likelihoods (uniform prior).

    The claims of different tracks are compared on this scale: a large, consistent object is near 0 for its
    class, a fragment of a few uncertain pixels is not, whatever their per-pixel peaks."""
    peak = log_likelihoods.max(1, keepdims=True)
    return log_likelihoods - peak - np.log(np.exp(log_likelihoods - peak).sum(1, keepdims=True))


def link_components(previous: np.ndarray, current: np.ndarray) -> list[tuple[int, int]]:
    """(previous id, current id) pairs of components that are each other's largest overlap."""
    both = (previous > 0) & (current > 0)
    if not both.any():
        return []
    keys, overlap = np.unique(previous[both].astype(np.int64) * (int(current.max()) + 1) + current[both],
                              return_counts=True)
    prev_ids, cur_ids = keys // (int(current.max()) + 1), keys % (int(current.max()) + 1)
    # Stable sort by overlap, then the last entry per id wins: each id's largest overlap (ties: larger key).
    order = np.argsort(overlap, kind="stable")
    best_of_prev = dict(zip(prev_ids[order].tolist(), cur_ids[order].tolist()))
    best_of_cur = dict(zip(cur_ids[order].tolist(), prev_ids[order].tolist()))
    return sorted((int(a), int(b)) for a, b in best_of_prev.items() if best_of_cur[b] == a)


def build_tracks(labels: list[np.ndarray], link: bool) -> list[list[tuple[int, int]]]:
    """Tracks as lists of (frame, component id); linked chains when `link`, single components otherwise."""
    track_of: dict[tuple[int, int], int] = {}
    tracks: list[list[tuple[int, int]]] = []
    for frame, frame_labels in enumerate(labels):
        links = dict((cur, prev) for prev, cur in link_components(labels[frame - 1], frame_labels)) \
            if link and frame > 0 else {}
        for component in range(1, int(frame_labels.max()) + 1):
            previous = links.get(component)
            if previous is not None:
                track = track_of[(frame - 1, previous)]
            else:
                track = len(tracks)
                tracks.append([])
            tracks[track].append((frame, component))
            track_of[(frame, component)] = track
    return tracks


def assign_classes(track_scores: np.ndarray, track_frames: list[set[int]]) -> list[int]:
    """Greedy one-class-per-instance assignment: object class ids (1..48) per track, 0 (background) for a track
    whose every allowed class is taken or suppressed (-inf)."""
    n_tracks, n_classes = track_scores.shape
    # Best score first; ties by track, then class (the flat index order), so the result is deterministic.
    order = np.argsort(-track_scores.ravel(), kind="stable")
    chosen = np.full(n_tracks, -1)
    frames_of_class: dict[int, set[int]] = {}
    left = n_tracks
    flat_scores = track_scores.ravel()
    for flat in order.tolist():
        track, column = divmod(flat, n_classes)
        if chosen[track] >= 0 or not np.isfinite(flat_scores[flat]):
            continue  # a class with no probability (suppressed as absent) is never given
        taken = frames_of_class.setdefault(column, set())
        if taken & track_frames[track]:
            continue  # a track in one of these frames already holds this class
        chosen[track] = column
        taken |= track_frames[track]
        left -= 1
        if left == 0:
            break
    # A track left without a class: with every class open to it (no -inf score), only more than 48 tracks in its
    # frames do that, and it keeps its best class; with classes suppressed, it becomes background, so a
    # suppressed or held class is never given.
    unsuppressed = np.isfinite(track_scores).all(1)
    fallback = np.where(unsuppressed, track_scores.argmax(1) + 1, 0)
    return np.where(chosen >= 0, chosen + 1, fallback).tolist()


def _frame_scores(frames: np.ndarray, labels: list[np.ndarray], object_scores: ObjectScores | None,
                  segmenter_weight: float) -> list[np.ndarray]:
    """Per frame, each component's class scores [n, 48]: summed pixel log-probabilities, or with another judge
    segmenter_weight x their mean plus its opinion (see instance_vote)."""
    per_frame = [component_scores(frame, frame_labels) for frame, frame_labels in zip(frames, labels)]
    if object_scores is None:
        return per_frame
    opinions = object_scores(labels)
    return [segmenter_weight * sums / np.maximum(np.bincount(frame_labels.ravel())[1:, None], 1) + extra
            for sums, frame_labels, extra in zip(per_frame, labels, opinions)]


def keep_distinct_cuts(cut: np.ndarray, whole: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Component labels [H, W]: `cut` (components cut along contact edges), except that the pieces of one
    `whole` component whose best classes (scores [n pieces, 48]) are not all different are joined again."""
    n_cut = int(cut.max())
    if n_cut == 0:
        return cut
    both = cut > 0
    pairs = np.bincount(cut[both].astype(np.int64) * (int(whole.max()) + 1) + whole[both],
                        minlength=(n_cut + 1) * (int(whole.max()) + 1)).reshape(n_cut + 1, -1)
    parent = pairs[1:].argmax(1)  # the whole component holding each piece
    best = scores.argmax(1)
    target = np.arange(n_cut + 1)
    for region in np.unique(parent):
        pieces = np.flatnonzero(parent == region)
        if len(pieces) > 1 and len(set(best[pieces].tolist())) < len(pieces):
            target[pieces + 1] = pieces[0] + 1
    if np.array_equal(target, np.arange(n_cut + 1)):
        return cut
    _, relabelled = np.unique(target[cut], return_inverse=True)  # consecutive ids, background stays 0
    return relabelled.reshape(cut.shape).astype(np.int32)


def instance_vote(log_probs: torch.Tensor, link_frames: bool = True, split: str = "auto",
                  min_pixels: int = 1, object_scores: ObjectScores | None = None,
                  segmenter_weight: float = 1.0, edges: torch.Tensor | None = None,
                  edge_threshold: float = EDGE_THRESHOLD) -> torch.Tensor:
    """uint8 masks [T, H, W] from class scores [T, 49, H, W] of one video's frames (or [49, H, W] -> [H, W]).

    Scores should be log-probabilities (log_softmax is applied, so logits work too).
    object_scores: a second opinion per component, e.g. the object classifier's (`object_evidence`): given the
    frames' component maps, log p(class) [n, 48] of each frame's components. With it, a track's score is the sum
    over its frames of segmenter_weight x the component's *mean* pixel log-probability plus that opinion, so each
    frame's component is one vote of each kind (summed pixels would make the segmenter's vote near-certain).
    edges: the segmenter's contact-edge probabilities [T, H, W] (or [H, W]); colour regions are cut along them."""
    single = log_probs.dim() == 3
    scores = log_probs[None] if single else log_probs
    if scores.dim() != 4 or scores.shape[1] != NUM_CLASSES:
        raise ValueError(f"instance_vote expects scores [T, {NUM_CLASSES}, H, W]; got {tuple(log_probs.shape)}")
    frames = scores.detach().float().log_softmax(1).cpu().numpy()
    if edges is None:
        edge_maps = [None] * len(frames)
    else:
        edge_maps = list((edges[None] if edges.dim() == 2 else edges).detach().float().cpu().numpy())
        if len(edge_maps) != len(frames) or edge_maps[0].shape != frames.shape[-2:]:
            raise ValueError(f"instance_vote edges {tuple(edges.shape)} do not match scores {tuple(log_probs.shape)}")
    whole, labels = zip(*(_frame_regions(frame, split, min_pixels, edge, edge_threshold)
                          for frame, edge in zip(frames, edge_maps)))
    labels = list(labels)
    per_frame = _frame_scores(frames, labels, object_scores, segmenter_weight)
    if edges is not None:
        # A cut stands only where its pieces look like different objects: an edge inside one object (a cube's
        # own face edges) would otherwise hand one of its halves a wrong class.
        kept = [keep_distinct_cuts(cut, plain, scores) for cut, plain, scores in zip(labels, whole, per_frame)]
        if any(not np.array_equal(a, b) for a, b in zip(kept, labels)):
            labels = kept
            per_frame = _frame_scores(frames, labels, object_scores, segmenter_weight)
    tracks = build_tracks(labels, link_frames)
    # class_of[frame][component id] -> class id; component 0 (background) stays class 0.
    class_of = [np.zeros(int(frame_labels.max()) + 1, dtype=np.uint8) for frame_labels in labels]
    if tracks:
        likelihoods = np.stack([np.sum([per_frame[f][c - 1] for f, c in track], axis=0) for track in tracks])
        track_scores = class_posteriors(likelihoods)
        classes = assign_classes(track_scores, [{f for f, _ in track} for track in tracks])
        for track, class_id in zip(tracks, classes):
            for frame, component in track:
                class_of[frame][component] = class_id
    out = torch.from_numpy(np.stack([table[frame_labels] for table, frame_labels in zip(class_of, labels)]))
    return out[0] if single else out


def object_evidence(classifier, frames01: torch.Tensor, batch_size: int = 256,
                    factors: Sequence[str] = FACTORS) -> ObjectScores:
    """ObjectScores from an object classifier (models/object_classifier.py) looking at each component of the
    frames [T, 3, H, W] in [0, 1], cropped at full resolution (tools/data/object_crops.py); `factors`: those it
    judges (the others are left to the segmenter)."""
    from models.object_classifier import class_log_probs
    from tools.data.object_crops import crop_objects, view_crops
    from tools.predict.segmenter_io import class_factor_table

    device = next(classifier.parameters()).device
    table = class_factor_table()

    def scores(labels: list[np.ndarray]) -> list[np.ndarray]:
        items = [(t, c) for t, frame_labels in enumerate(labels) for c in range(1, int(frame_labels.max()) + 1)]
        crops = view_crops(crop_objects(frames01.detach().float().cpu(), torch.from_numpy(np.stack(labels)), items))
        with torch.no_grad():
            log_p = [class_log_probs(classifier(crops[i:i + batch_size].to(device)), table, factors).cpu()
                     for i in range(0, len(crops), batch_size)]
        flat = torch.cat(log_p).double().numpy() if log_p else np.zeros((0, NUM_CLASSES - 1))
        counts = [int(frame_labels.max()) for frame_labels in labels]
        return np.split(flat, np.cumsum(counts)[:-1])

    return scores


@dataclass(frozen=True)
class ObjectJudge:
    """An object classifier and how its opinion joins the vote (`predict.object_classifier`,
    `predict.vote_segmenter_weight`, `predict.vote_classifier_factors`)."""

    classifier: torch.nn.Module
    segmenter_weight: float = 0.1
    factors: tuple[str, ...] = FACTORS


def voted_video_masks(segmenter, frames01: torch.Tensor, tta: bool = False, min_pixels: int = 1,
                      judge: ObjectJudge | None = None, edge_threshold: float | None = EDGE_THRESHOLD
                      ) -> torch.Tensor:
    """Masks [T, H, W] (on the frames' device) of one video's frames [T, 3, H, W] in [0, 1]: a segmenter's class
    scores (at its trained size, `Segmenter.segment`), then one class per object linked over the frames; with an
    object judge, the classifier's opinion of each component joins the vote (`instance_vote`'s object_scores).
    A segmenter with a contact-edge channel cuts touching objects apart at edge_threshold (None: no cut)."""
    with torch.no_grad():
        scores, edges = segmenter.segment_with_boundary(frames01.float(), tta=tta, size=segmenter.trained_size)
    return instance_vote(scores, link_frames=True, min_pixels=min_pixels, **judge_votes(judge, frames01),
                         **edge_cut(edges, edge_threshold)).to(frames01.device)


def judge_votes(judge: ObjectJudge | None, frames01: torch.Tensor) -> dict[str, Any]:
    """instance_vote's object_scores and segmenter_weight for an object judge on these frames ({} without one)."""
    if judge is None:
        return {}
    return {"object_scores": object_evidence(judge.classifier, frames01, factors=judge.factors),
            "segmenter_weight": judge.segmenter_weight}


def edge_cut(edges: torch.Tensor | None, edge_threshold: float | None) -> dict[str, Any]:
    """instance_vote's edges and edge_threshold ({}: no cut, without an edge map or with the threshold off)."""
    if edges is None or edge_threshold is None:
        return {}
    return {"edges": edges, "edge_threshold": edge_threshold}


def load_vote_judge(pcfg: Mapping[str, Any], device: str | torch.device = "cpu") -> ObjectJudge | None:
    """The ObjectJudge of a predict config (None without `predict.object_classifier`); a vote_* key that is unset
    keeps ObjectJudge's default."""
    if not pcfg.get("object_classifier"):
        return None
    from tools.train.object_classifier import load_object_classifier

    settings = {}
    if pcfg.get("vote_segmenter_weight") is not None:
        settings["segmenter_weight"] = float(pcfg["vote_segmenter_weight"])
    if pcfg.get("vote_classifier_factors"):
        settings["factors"] = tuple(pcfg["vote_classifier_factors"])
    return ObjectJudge(load_object_classifier(str(pcfg["object_classifier"]), device), **settings)


def vote_edge_threshold(pcfg: Mapping[str, Any]) -> float | None:
    """`predict.vote_edge_threshold`: where a segmenter's contact-edge probability cuts colour regions (a missing
    key keeps EDGE_THRESHOLD; null turns the cut off)."""
    if "vote_edge_threshold" not in pcfg:
        return EDGE_THRESHOLD
    value = pcfg["vote_edge_threshold"]
    return None if value is None else float(value)
