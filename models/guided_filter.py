"""Edge-aware upsampling of a segmenter's foreground: the guided filter (He, Sun and Tang, ECCV 2010).

A segmenter run at reduced resolution (80x120 for the CPU config) and upsampled bilinearly to 160x240 puts
object outlines up to a pixel off. Nearly all of its foreground errors lie within two pixels of the true
outline (on 30 generated val videos: 94% of the wrong pixels), and it is in exactly those pixels that the
full-resolution frame knows better: the floor is flat grey and an object's edge is a step in colour. The
guided filter fits, in every (2r+1)^2 window, the foreground probability as a linear function of the frame's
RGB, and averages the fits; the probability then follows the frame's edges. On 10 generated val videos it
raised objectness IoU from 0.915 to 0.964 (radius 4, eps 1e-4), on the 66 real frames from 0.892 to 0.901.

Pure functions on tensors, batched over frames; `refine_foreground` applies the filter to class scores.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GUIDED_RADIUS = 4
GUIDED_EPS = 1e-4
_PROBABILITY_FLOOR = 1e-6


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of x [N, C, H, W] over each (2r+1)^2 window, windows cut at the border (divided by their size)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int = GUIDED_RADIUS,
                  eps: float = GUIDED_EPS) -> torch.Tensor:
    """source [N, H, W] filtered with the colour guide [N, 3, H, W] (float32; the 3x3 solves in float64): per
    window source ~ a . guide + b by ridge regression (eps on the guide's covariance), a and b averaged over the
    windows covering each pixel. Larger eps smooths more; eps -> 0 follows the guide's every edge."""
    if guide.ndim != 4 or guide.shape[1] != 3 or source.shape != guide[:, 0].shape:
        raise ValueError(f"guided_filter expects guide [N, 3, H, W] and source [N, H, W]; "
                         f"got {tuple(guide.shape)} and {tuple(source.shape)}")
    with torch.autocast(guide.device.type, enabled=False):  # variances of [0, 1] colours need float32 at least
        guide, source = guide.float(), source.float()[:, None]
        mean_guide = box_mean(guide, radius)                                       # [N, 3, H, W]
        mean_source = box_mean(source, radius)                                     # [N, 1, H, W]
        covariance_with_source = box_mean(guide * source, radius) - mean_guide * mean_source
        slope = _solve_symmetric_3x3(_guide_covariance(guide, mean_guide, radius, eps), covariance_with_source)
        offset = mean_source - (slope * mean_guide).sum(1, keepdim=True)
        out = (box_mean(slope, radius) * guide).sum(1, keepdim=True) + box_mean(offset, radius)
    return out[:, 0]


_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _guide_covariance(guide: torch.Tensor, mean_guide: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """The six distinct entries [N, 6, H, W] (order _UPPER) of each window's 3x3 colour covariance + eps I."""
    products = torch.cat([guide[:, i:i + 1] * guide[:, j:j + 1] for i, j in _UPPER], dim=1)
    means = torch.cat([mean_guide[:, i:i + 1] * mean_guide[:, j:j + 1] for i, j in _UPPER], dim=1)
    ridge = torch.tensor([eps if i == j else 0.0 for i, j in _UPPER], device=guide.device).view(1, 6, 1, 1)
    return box_mean(products, radius) - means + ridge


def _solve_symmetric_3x3(entries: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """x [N, 3, H, W] with M x = rhs per pixel, M symmetric positive definite given by its entries [N, 6, H, W]:
    by the adjugate in float64 (eps keeps M away from singular; float64 keeps the cofactors' cancellations exact).
    22 frames at 160x240 filter in 0.58 s on one thread, against 0.76 s with torch.linalg.solve."""
    a, b, c, d, e, f = entries.double().unbind(1)
    cofactors = (d * f - e * e, c * e - b * f, b * e - c * d, a * f - c * c, b * c - a * e, a * d - b * b)
    m00, m01, m02, m11, m12, m22 = cofactors
    determinant = a * m00 + b * m01 + c * m02
    r0, r1, r2 = rhs.double().unbind(1)
    x = torch.stack([m00 * r0 + m01 * r1 + m02 * r2, m01 * r0 + m11 * r1 + m12 * r2,
                     m02 * r0 + m12 * r1 + m22 * r2], dim=1) / determinant[:, None]
    return x.to(rhs.dtype)


def refine_foreground(scores: torch.Tensor, rgb: torch.Tensor, radius: int = GUIDED_RADIUS,
                      eps: float = GUIDED_EPS) -> torch.Tensor:
    """Log-probabilities [N, C, H, W] from class scores [N, C, H, W] (class 0 = background) and the frames
    [N, 3, H, W] in [0, 1] at the same resolution: p(foreground) guided-filtered by the frames; each object
    class keeps its share of the foreground, log p(c) = log p(c | foreground) + log p'(foreground).
    In float32: the scores are cast, and guided_filter keeps autocast off."""
    log_probs = scores.float().log_softmax(1)
    foreground = 1.0 - log_probs[:, 0].exp()
    refined = guided_filter(rgb, foreground, radius, eps).clamp(_PROBABILITY_FLOOR, 1.0 - _PROBABILITY_FLOOR)
    objects = log_probs[:, 1:].log_softmax(1) + refined.log()[:, None]
    return torch.cat([torch.log1p(-refined)[:, None], objects], dim=1)
