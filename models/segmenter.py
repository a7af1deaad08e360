"""The per-frame segmentation network: an smp Unet/UnetPlusPlus with a ResNet encoder, 49 classes.

`Segmenter.segment(rgb)` is the seam the predictor uses (DESIGN.md section 4): RGB in [0, 1] of any size
in, class logits at the same size out. Normalisation and the padding to a multiple of 32 (2**encoder_depth)
that smp's encoders need happen inside, so callers never think about them. Pretrained weights are never downloaded
by default (the competition forbids them); tools/predict/segmenter_io.py loads trained or local weights.

Two output heads (`model.head`):
- `flat`: 49 class logits.
- `factorised`: per pixel an objectness logit and shape, material and colour logits; the 49 class scores are the
  composed log-probabilities `log p(bg)` and `log p(fg) + log p(shape) + log p(material) + log p(colour)`, so
  every class shares statistics with the others (a rare "purple metal cylinder" learns from all purple, all
  metal and all cylinder pixels). Which (shape, material, colour) each class is comes in as `class_factors`
  (from tools/data/classes.py, passed by tools/predict/segmenter_io.build_task_segmenter): this module stays
  free of task constants.

`model.boundary: true` adds one more output channel: the logit that a pixel lies on a contact edge between two
objects (tools/train/seg_losses.boundary_targets). Two touching objects of one colour are one colour region;
the instance vote cuts such regions along this edge (tools/predict/instance_vote.py). `Segmenter.segment` keeps
returning class scores only; `segment_with_boundary` also returns the edge probability.

Run at a reduced `size` (the CPU config trains at 80x120), the scores are brought back to the frame's resolution
bilinearly and then, with `upsample = "guided"` (the default; `model.upsample`), the foreground probability is
guided-filtered by the full-resolution frame so that outlines follow the frame's edges (models/guided_filter.py).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models import ModelConfigError
from models.guided_filter import GUIDED_EPS, GUIDED_RADIUS, refine_foreground


ARCHITECTURES = ("unet", "unetplusplus")
HEADS = ("flat", "factorised")
UPSAMPLING = ("guided", "bilinear")
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
# ImageNet statistics: the convention smp encoders (and any local ResNet weights) were built around.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class Segmenter(nn.Module):
    """RGB frames [N, 3, H, W] in [0, 1] -> class scores [N, classes, H, W] (logits, or log-probabilities when
    the head is factorised)."""

    def __init__(self, arch: str = "unet", encoder: str = "resnet18", classes: int = 49,
                 encoder_weights: str | None = None,
                 encoder_depth: int = 5, decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
                 head: str = "flat", class_factors: Sequence[Sequence[int]] | None = None,
                 boundary: bool = False, upsample: str = "guided", guided_radius: int = GUIDED_RADIUS,
                 guided_eps: float = GUIDED_EPS) -> None:
        super().__init__()
        self.classes = int(classes)
        self.has_boundary = bool(boundary)
        if len(decoder_channels) != int(encoder_depth):
            raise ValueError(f"model.decoder_channels {list(decoder_channels)} needs one entry per encoder stage "
                            f"(model.encoder_depth={encoder_depth})")
        self.head = FactorisedHead(class_factors, self.classes) if _head_name(head) == "factorised" else None
        out_channels = (self.head.channels if self.head is not None else self.classes) + int(self.has_boundary)
        # The encoder halves the resolution encoder_depth times, so inputs are padded to this multiple.
        self.size_multiple = 2 ** int(encoder_depth)
        self.net = _build_smp_network(arch, encoder, out_channels, encoder_weights, int(encoder_depth),
                                      tuple(int(c) for c in decoder_channels))
        _drop_unused_resnet_stages(self.net.encoder, int(encoder_depth))
        # Not persistent: they are constants, so checkpoints hold only learned state.
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        # The (H, W) the network was trained at; load_segmenter fills it from the checkpoint's config.
        self.trained_size: tuple[int, int] | None = None
        # How scores computed at a reduced size return to the frame's resolution (an inference choice: a loaded
        # model can be switched, e.g. by evals/benchmarks/segmenter.py --upsample).
        self.upsample = upsample
        self.guided_radius = int(guided_radius)
        self.guided_eps = float(guided_eps)

    @property
    def upsample(self) -> str:
        """'guided' or 'bilinear' (UPSAMPLING); checked when set, so segmenting never meets an unknown mode."""
        return self._upsample

    @upsample.setter
    def upsample(self, mode: str) -> None:
        if mode not in UPSAMPLING:
            raise ModelConfigError(f"model.upsample={mode!r} is unknown; use one of {UPSAMPLING}")
        self._upsample = mode

    def forward(self, rgb: torch.Tensor, with_factors: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Class scores for frames of any size (padded to a multiple of 2**encoder_depth inside, cropped back).

        with_factors: also return the factorised head's raw logits {'objectness', 'shape', 'material', 'colour'}
        (empty for the flat head) and, with `boundary`, the contact-edge logit {'boundary' [N, 1, H, W]}, which
        the loss needs; an argument of forward so DDP sees the whole graph.
        """
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"Segmenter expects RGB frames [N, 3, H, W]; got shape {tuple(rgb.shape)}")
        height, width = rgb.shape[-2:]
        normalised = (rgb - self.mean.to(rgb.dtype)) / self.std.to(rgb.dtype)
        pad_h = -height % self.size_multiple
        pad_w = -width % self.size_multiple
        if pad_h or pad_w:
            # Replicate rather than zero-pad: a black border would look like a (dark) object edge.
            normalised = F.pad(normalised, (0, pad_w, 0, pad_h), mode="replicate")
        raw = self.net(normalised)[..., :height, :width]
        extra: dict[str, torch.Tensor] = {}
        if self.has_boundary:
            raw, extra["boundary"] = raw[:, :-1], raw[:, -1:]
        if self.head is None:
            return (raw, extra) if with_factors else raw
        factors = self.head.split(raw)
        scores = self.head.compose(factors)
        return (scores, {**factors, **extra}) if with_factors else scores

    def segment(self, rgb: torch.Tensor, tta: bool = False, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Class scores [N, classes, H, W] at the input's resolution.

        tta: average the class probabilities of the frame and its horizontal mirror; the result is then
        log-probabilities (argmax and softmax behave as with logits). size: run the network at this (H, W)
        (e.g. `trained_size`) and resize the scores back to the input's resolution.
        """
        return self.segment_with_boundary(rgb, tta, size)[0]

    def segment_with_boundary(self, rgb: torch.Tensor, tta: bool = False, size: tuple[int, int] | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`segment`'s class scores and the contact-edge probability [N, H, W] (None without `boundary`),
        both at the input's resolution, with the same tta and size."""
        frames, out_size = rgb, tuple(rgb.shape[-2:])
        if size is not None and tuple(size) != out_size:
            rgb = F.interpolate(rgb, size=tuple(size), mode="bilinear", antialias=True,
                                align_corners=False).clamp(0.0, 1.0)
        if tta:
            both, extra = self(torch.cat([rgb, rgb.flip(-1)], dim=0), with_factors=True)
            plain, mirrored = both.float().chunk(2, dim=0)
            probabilities = 0.5 * (plain.softmax(1) + mirrored.flip(-1).softmax(1))
            scores = probabilities.clamp_min(1e-8).log()
            edge = extra.get("boundary")
            if edge is not None:
                plain_edge, mirrored_edge = edge.float().sigmoid().chunk(2, dim=0)
                edge = 0.5 * (plain_edge + mirrored_edge.flip(-1))
        else:
            scores, extra = self(rgb, with_factors=True)
            edge = extra.get("boundary")
            edge = edge.float().sigmoid() if edge is not None else None
        if tuple(scores.shape[-2:]) != out_size:
            scores = F.interpolate(scores.float(), size=out_size, mode="bilinear", align_corners=False)
            if self.upsample == "guided":
                scores = refine_foreground(scores, frames, self.guided_radius, self.guided_eps)
            if edge is not None:
                edge = F.interpolate(edge, size=out_size, mode="bilinear", align_corners=False)
        return scores, (edge[:, 0] if edge is not None else None)


    @torch.no_grad()
    def masks(self, rgb: torch.Tensor, tta: bool = False, batch_size: int = 8) -> torch.Tensor:
        """uint8 class masks [N, H, W] on the CPU of frames [N, 3, H, W] in [0, 1], `batch_size` frames at a
        time on the model's device, the network run at `trained_size` (when known)."""
        device = next(self.parameters()).device
        batch_size = max(1, int(batch_size))
        masks = [self.segment(rgb[start:start + batch_size].to(device, torch.float32), tta=tta,
                              size=self.trained_size).argmax(1).to(torch.uint8).cpu()
                 for start in range(0, len(rgb), batch_size)]
        return torch.cat(masks) if masks else torch.zeros(0, *rgb.shape[-2:], dtype=torch.uint8)


def _head_name(head: str) -> str:
    key = str(head).lower().replace("factorized", "factorised")
    if key not in HEADS:
        raise ValueError(f"model.head={head!r} is not supported; use one of {HEADS}")
    return key


class FactorisedHead(nn.Module):
    """Splits the network's channels into objectness (1), shape, material and colour logits and composes the
    class log-probabilities from them.

    class_factors[k] is the (shape, material, colour) index triple of object class k + 1; class 0 is background.
    """

    FACTORS = ("shape", "material", "colour")

    def __init__(self, class_factors: Sequence[Sequence[int]] | None, classes: int) -> None:
        super().__init__()
        if class_factors is None or len(class_factors) != classes - 1:
            raise ValueError(f"model.head=factorised needs the (shape, material, colour) of each of the "
                             f"{classes - 1} object classes; got {None if class_factors is None else len(class_factors)}")
        table = torch.tensor([list(map(int, triple)) for triple in class_factors], dtype=torch.long)
        if table.ndim != 2 or table.shape[1] != 3 or int(table.min()) < 0:
            raise ValueError("class_factors must hold one non-negative (shape, material, colour) triple per class")
        self.sizes = tuple(int(n) for n in (table.max(0).values + 1).tolist())
        self.channels = 1 + sum(self.sizes)
        # Row k of `composition` picks class k+1's shape, material and colour among the concatenated factor
        # log-probabilities: composing is then one 1x1 convolution (an index_select's backward, index_add,
        # was a fifth of a CPU training step).
        offsets = torch.tensor([0, self.sizes[0], self.sizes[0] + self.sizes[1]])
        composition = torch.zeros(len(table), sum(self.sizes))
        composition.scatter_(1, table + offsets, 1.0)
        self.register_buffer("composition", composition.view(len(table), -1, 1, 1), persistent=False)

    def split(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw network output [N, channels, H, W] -> {'objectness' [N,1,H,W], 'shape', 'material', 'colour'}."""
        parts = torch.split(raw, [1, *self.sizes], dim=1)
        return dict(zip(("objectness", *self.FACTORS), parts))

    def compose(self, factors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class log-probabilities [N, classes, H, W]: they normalise over the classes by construction."""
        objectness = factors["objectness"].float()
        log_p = torch.cat([factors[name].float().log_softmax(1) for name in self.FACTORS], dim=1)
        objects = F.logsigmoid(objectness) + F.conv2d(log_p, self.composition.to(log_p.dtype))
        return torch.cat([F.logsigmoid(-objectness), objects], dim=1)


def _build_smp_network(arch: str, encoder: str, classes: int, encoder_weights: str | None, encoder_depth: int,
                       decoder_channels: tuple[int, ...]) -> nn.Module:
    import segmentation_models_pytorch as smp  # imported here: it pulls in torchvision and timm

    constructors = {"unet": smp.Unet, "unetplusplus": smp.UnetPlusPlus}
    key = str(arch).lower().replace("_", "").replace("+", "plus")
    if key not in constructors:
        raise ModelConfigError(f"model.arch={arch!r} is not supported; use one of {ARCHITECTURES}")
    try:
        return constructors[key](encoder_name=encoder, encoder_weights=encoder_weights, classes=classes,
                                 encoder_depth=encoder_depth, decoder_channels=decoder_channels)
    except KeyError as err:
        raise ModelConfigError(f"model.encoder={encoder!r} is not an encoder segmentation-models-pytorch knows; "
                        f"use e.g. resnet18 or resnet34") from err


def _drop_unused_resnet_stages(encoder: nn.Module, depth: int) -> None:
    """Delete the ResNet stages a shallow encoder never runs (smp keeps them).

    Unused parameters would make DDP fail (it waits for their gradients) and waste optimizer memory.
    """
    for stage in range(max(depth, 1), 5):
        if hasattr(encoder, f"layer{stage}"):
            delattr(encoder, f"layer{stage}")


def build_segmenter(model_cfg: Mapping[str, Any], class_factors: Sequence[Sequence[int]] | None = None) -> Segmenter:
    """A Segmenter from a config's `model` section (arch, encoder, encoder_weights, ..., classes, head, boundary,
    upsample, guided_radius, guided_eps).

    class_factors: the (shape, material, colour) of every object class, needed by `head: factorised`."""
    return Segmenter(arch=model_cfg.get("arch", "unet"), encoder=model_cfg.get("encoder", "resnet18"),
                     classes=int(model_cfg.get("classes", 49)),
                     encoder_weights=model_cfg.get("encoder_weights"),
                     encoder_depth=int(model_cfg.get("encoder_depth", 5)),
                     decoder_channels=tuple(model_cfg.get("decoder_channels") or DEFAULT_DECODER_CHANNELS),
                     head=str(model_cfg.get("head") or "flat"), class_factors=class_factors,
                     boundary=bool(model_cfg.get("boundary", False)),
                     upsample=str(model_cfg.get("upsample") or "guided"),
                     guided_radius=int(model_cfg.get("guided_radius", GUIDED_RADIUS)),
                     guided_eps=float(model_cfg.get("guided_eps", GUIDED_EPS)))
