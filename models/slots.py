"""Object slots: a clip as one slot per class (a class is an instance in this data), no slot discovery.

* **State** (per frame t and class c, computed from the mask the same way in training and prediction):
  presence, centroid (x, y in [-1, 1]), log of the area fraction, and the log-Cholesky factor of the
  pixel covariance (log l11, l21 / l11, log l22): position, size and a shape/orientation descriptor.
* **Object latent** (per class, from the observed frames only): the class's mask resampled into its own
  whitened frame (centroid at 0, covariance to identity) from the last observed frame where it is present,
  a K x K template, plus its mean colour. A small learned refiner turns templates into logits.
* **Scene latent**: the per-pixel median of the observed frames where no object covers the pixel.
* **Decoder**: each present slot's template is drawn at its state's position, scale and orientation
  (`grid_sample` through the inverse of the state's affine map) and slots are composited front to back, the
  lower in the image (nearer the camera) in front, into 49-class log-probabilities; RGB over the scene.

A class never present in the observed frames gets no object latent, so it can never appear in a decoded mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

STATE_NAMES = ("presence", "cx", "cy", "log_area", "log_l11", "shear", "log_l22")
STATE_DIM = len(STATE_NAMES)
TEMPLATE_RADIUS = 3.0  # a template spans +-3 standard deviations of the object's pixels in each whitened axis
LOG_EPS = 1e-6
SLOT_DEFAULTS: dict[str, Any] = {"type": "slots", "num_classes": 49, "template_size": 24, "refiner_channels": 16,
                                 "min_pixels": 1}


@dataclass
class SlotLatents:
    """A clip as slots. Slot s is class s + 1; `objects` and `scene` come from observed frames only."""

    scene: Tensor      # [B, 3, H, W] RGB in [0, 1]: the background with objects removed
    objects: Tensor    # [B, S, 1, K, K] templates in [0, 1] (0 where the class was never observed)
    colours: Tensor    # [B, S, 3] mean RGB of each object
    states: Tensor     # [B, T, S, STATE_DIM]
    known: Tensor      # [B, S] bool: the class was present in some observed frame


def pixel_grid(height: int, width: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in grid_sample's normalised convention (align_corners=False): [H, W] each."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    return torch.meshgrid(ys, xs, indexing="ij")


def mask_states(masks: Tensor, num_classes: int = 49, min_pixels: int = 1) -> Tensor:
    """Class-id masks [..., H, W] -> states [..., num_classes - 1, STATE_DIM] (zeros where absent).

    Moments are accumulated with one bincount per moment, so the cost does not grow with the class count.
    """
    lead, (height, width) = masks.shape[:-2], masks.shape[-2:]
    ids = masks.reshape(-1, height * width).long().clamp(0, num_classes - 1)
    frames = ids.shape[0]
    bins = (ids + num_classes * torch.arange(frames, device=masks.device)[:, None]).flatten()
    ys, xs = pixel_grid(height, width, masks.device)
    xs, ys = xs.flatten().repeat(frames), ys.flatten().repeat(frames)
    features = (None, xs, ys, xs * xs, ys * ys, xs * ys)
    sums = torch.stack([torch.bincount(bins, weights=f, minlength=frames * num_classes).float() for f in features],
                       -1).reshape(frames, num_classes, 6)
    sums = sums[:, 1:]  # drop the background
    count = sums[..., 0]
    present = count >= max(1, int(min_pixels))
    n = count.clamp(min=1)
    cx, cy = sums[..., 1] / n, sums[..., 2] / n
    pixel = 2.0 / width  # a pixel's width in normalised x; keeps one-pixel objects non-singular
    var_x = (sums[..., 3] / n - cx * cx).clamp(min=0) + pixel ** 2 / 12
    var_y = (sums[..., 4] / n - cy * cy).clamp(min=0) + (2.0 / height) ** 2 / 12
    cov = sums[..., 5] / n - cx * cy
    l11 = var_x.sqrt()
    l21 = cov / l11
    l22 = (var_y - l21 * l21).clamp(min=(2.0 / height) ** 2 / 12).sqrt()
    log_area = (n / (height * width)).log()
    states = torch.stack([present.float(), cx, cy, log_area, l11.log(), l21 / l11, l22.log()], dim=-1)
    states = states * present[..., None]
    return states.reshape(*lead, num_classes - 1, STATE_DIM)


def state_affine(states: Tensor) -> tuple[Tensor, Tensor]:
    """(centre [..., 2] as (x, y), lower-triangular L [..., 2, 2]) of states; pixel offset = L @ whitened."""
    l11 = states[..., 4].exp()
    l21 = states[..., 5] * l11
    l22 = states[..., 6].exp()
    zeros = torch.zeros_like(l11)
    matrix = torch.stack([torch.stack([l11, zeros], -1), torch.stack([l21, l22], -1)], -2)
    return states[..., 1:3], matrix


def sample_templates(binary: Tensor, states: Tensor, size: int) -> Tensor:
    """Each slot's binary mask [B, S, H, W] resampled in its own whitened frame (states [B, S, D]) -> [B, S, 1, K, K]."""
    batch, slots = states.shape[:2]
    centre, matrix = state_affine(states)
    axis = torch.linspace(-TEMPLATE_RADIUS, TEMPLATE_RADIUS, size, device=binary.device)
    wy, wx = torch.meshgrid(axis, axis, indexing="ij")
    whitened = torch.stack([wx, wy], -1).reshape(1, 1, size * size, 2).expand(batch, slots, -1, -1)
    points = centre[:, :, None] + torch.einsum("bsij,bspj->bspi", matrix, whitened)
    sampled = F.grid_sample(binary.reshape(batch * slots, 1, *binary.shape[-2:]).float(),
                            points.reshape(batch * slots, size, size, 2), align_corners=False)
    return sampled.reshape(batch, slots, 1, size, size)


def render_templates(probabilities: Tensor, states: Tensor, height: int, width: int) -> Tensor:
    """Templates [B, S, 1, K, K] in [0, 1] drawn at states [B, S, D] -> occupancy [B, S, H, W] (0 outside)."""
    batch, slots = states.shape[:2]
    centre, matrix = state_affine(states)
    l11, l21, l22 = matrix[..., 0, 0], matrix[..., 1, 0], matrix[..., 1, 1]
    ys, xs = pixel_grid(height, width, states.device)
    dx = xs.view(1, 1, height, width) - centre[..., 0, None, None]
    dy = ys.view(1, 1, height, width) - centre[..., 1, None, None]
    wx = dx / l11[..., None, None]
    wy = (dy - l21[..., None, None] * wx) / l22[..., None, None]
    grid = torch.stack([wx, wy], -1) / TEMPLATE_RADIUS
    drawn = F.grid_sample(probabilities.reshape(batch * slots, 1, *probabilities.shape[-2:]),
                          grid.reshape(batch * slots, height, width, 2), align_corners=True)
    return drawn.reshape(batch, slots, height, width)


def composite(occupancy: Tensor, depth: Tensor) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing: occupancy [B, S, H, W], depth [B, S] (larger = nearer) ->
    (visible share of each slot [B, S, H, W], background share [B, H, W])."""
    order = depth.argsort(dim=1, descending=True)
    index = order[..., None, None].expand_as(occupancy)
    front_first = occupancy.gather(1, index)
    passing = torch.cumprod(1 - front_first, dim=1)
    in_front = torch.cat([torch.ones_like(passing[:, :1]), passing[:, :-1]], dim=1)
    visible = torch.zeros_like(occupancy).scatter(1, index, front_first * in_front)
    return visible, passing[:, -1]


def last_present(states: Tensor, observed: Tensor) -> Tensor:
    """Index of the last observed frame where each slot is present: states [B, T, S, D], observed [B, T] bool
    -> [B, S] long (-1 where never present)."""
    present = (states[..., 0] > 0.5) & observed[..., None]
    frame = torch.arange(states.shape[1], device=states.device).view(1, -1, 1)
    return torch.where(present, frame, torch.full_like(frame, -1)).amax(dim=1)


def gather_frame(values: Tensor, index: Tensor) -> Tensor:
    """values [B, T, S, ...] at per-slot frame index [B, S] (clamped at 0) -> [B, S, ...]."""
    idx = index.clamp(min=0).view(*index.shape[:1], 1, index.shape[1], *([1] * (values.dim() - 3)))
    return values.gather(1, idx.expand(-1, -1, -1, *values.shape[3:])).squeeze(1)
