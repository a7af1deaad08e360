"""Stage-1 losses: RGB reconstruction, semantic head, latent regulariser and the GAN finetune terms.

``FirstStageLoss`` owns the discriminators (``.discriminator``, built only when ``gan.enabled``) so
the training loop gives them their own optimizer (``discriminator_parameters()``); under DDP their
gradients are averaged by hand, since they run twice per step. Each training step calls ``loss(...)`` for the autoencoder, then,
when ``gan_active(step)``, ``loss.discriminator_loss(...)`` for the discriminators.

Latent regulariser: a small L2 penalty on the motion latents *before* tanh. It keeps them out of
tanh's flat tails, where gradients vanish and stage 2 would see latents piled up at +-1. (A temporal
smoothness term was not chosen: objects entering or colliding make real motion latents jump.)
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from einops import rearrange
from omegaconf import DictConfig, OmegaConf
from torch import nn

from models.latents import Latents
from models.discriminators import PatchDiscriminator2d, PatchDiscriminator3d, hinge_d_loss, hinge_g_loss
from tools.core.errors import UserError
from tools.train.seg_losses import masked_cross_entropy, soft_dice_loss

LOSS_DEFAULTS: dict[str, Any] = {
    "l1_weight": 1.0,
    "lpips_weight": 1.0,
    "lpips_net": "alex",
    "lpips_frames": 4,
    "ce_weight": 1.0,
    "dice_weight": 0.5,
    "motion_reg_weight": 1.0e-3,
    "gan": {
        "enabled": False, "disc_start": 0, "weight": 0.5, "adaptive": True, "max_adaptive_weight": 1.0e4,
        "disc_2d": True, "disc_3d": True, "channels": 64, "layers": 3, "lr": 1.0e-4, "betas": [0.5, 0.9],
    },
}
LOG_KEYS = ("loss_total", "l1", "lpips", "ce", "dice", "reg", "g_adv", "d_loss", "d_weight", "psnr", "mask_iou")


def resolve_loss_config(config: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    """Merge a ``loss`` section over the defaults; unknown keys are a user error."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    config = dict(config or {})
    gan = dict(config.pop("gan", None) or {})
    unknown = sorted(set(config) - set(LOSS_DEFAULTS)) + sorted(f"gan.{k}" for k in set(gan) - set(LOSS_DEFAULTS["gan"]))
    if unknown:
        raise UserError(f"loss config: unknown key(s) {unknown}; see configs/autoencoder/base.yaml for the known ones.")
    return {**LOSS_DEFAULTS, **config, "gan": {**LOSS_DEFAULTS["gan"], **gan}}


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over videos of the PSNR (dB) of [B, ...] tensors in [-1, 1] (data range 2)."""
    mse = (prediction.detach().float() - target.float()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(4.0 / mse.clamp(min=1e-10))).mean()


def mask_iou(mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean IoU over classes present in prediction or target, on known pixels (masks >= 0); NaN if none known."""
    num_classes = mask_logits.shape[-3]
    prediction = mask_logits.detach().argmax(-3).flatten()
    target = masks.flatten().long()
    known = target >= 0
    # Unknown pixels are sent to an extra bin that is dropped, which avoids a host sync from boolean indexing.
    pairs = torch.where(known, target * num_classes + prediction, torch.full_like(target, num_classes ** 2))
    confusion = torch.bincount(pairs, minlength=num_classes ** 2 + 1)[:-1].view(num_classes, num_classes).float()
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return (intersection / union.clamp(min=1)).sum() / present.sum()


def adaptive_gan_weight(reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float) -> torch.Tensor:
    """VQGAN's balance: ratio of gradient norms of the two losses at the decoder's last layer (detached)."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


class Discriminators(nn.Module):
    """The 2D frame and/or 3D clip discriminators as one module (one optimizer)."""

    def __init__(self, gan_config: Mapping[str, Any]) -> None:
        super().__init__()
        channels, layers = gan_config["channels"], gan_config["layers"]
        self.frame = PatchDiscriminator2d(3, channels, layers) if gan_config["disc_2d"] else None
        self.clip = PatchDiscriminator3d(3, channels, layers) if gan_config["disc_3d"] else None
        if self.frame is None and self.clip is None:
            raise UserError("loss.gan.enabled is true but both loss.gan.disc_2d and loss.gan.disc_3d are false; "
                            "enable at least one.")

    def forward(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """Clips [B, T, 3, H, W] -> list of logit maps (frame discriminator first)."""
        clips = clips.float()  # bf16 decoder output may arrive outside autocast; autocast re-casts as it needs
        logits = []
        if self.frame is not None:
            logits.append(self.frame(rearrange(clips, "b t c h w -> (b t) c h w")))
        if self.clip is not None:
            logits.append(self.clip(clips))
        return logits


class FirstStageLoss(nn.Module):
    """Weighted stage-1 loss; ``perceptual`` maps two [N,3,H,W] batches in [-1,1] to [N] distances."""

    def __init__(self, config: Mapping[str, Any] | DictConfig | None = None,
                 perceptual: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.config = resolve_loss_config(config)
        # Kept out of the module tree: frozen LPIPS weights belong in no checkpoint and no DDP bucket.
        self._perceptual = [perceptual] if perceptual is not None else []
        gan = self.config["gan"]
        self.discriminator = Discriminators(gan) if gan["enabled"] else None

    def perceptual(self) -> nn.Module:
        """The perceptual metric, building evals.metrics.lpips.LPIPS on first use when none was given."""
        if not self._perceptual:
            from evals.metrics.lpips import LPIPS  # lazy: only runs where the LPIPS weights are installed
            module = LPIPS(net=self.config["lpips_net"])
            module.eval().requires_grad_(False)
            self._perceptual.append(module)
        return self._perceptual[0]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [] if self.discriminator is None else list(self.discriminator.parameters())

    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.config["gan"]["disc_start"]

    def _perceptual_loss(self, target: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        frames = target.shape[1]
        count = self.config["lpips_frames"]
        # A random subset of frames per step: LPIPS on all 22 full-res frames costs more than the decoder.
        index = torch.randperm(frames)[:count].to(target.device) if count and count < frames else None
        if index is not None:
            target, rgb = target.index_select(1, index), rgb.index_select(1, index)
        module = self.perceptual().to(rgb.device)
        flat = "b t c h w -> (b t) c h w"
        return module(rearrange(rgb, flat), rearrange(target, flat)).mean()

    def _semantic_losses(self, mask_logits: Optional[torch.Tensor], masks: Optional[torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        if mask_logits is None:
            return torch.zeros(()), torch.zeros(())
        if masks is None:
            # Zero that still touches the head, so DDP sees its parameters used on unlabeled batches.
            zero = mask_logits.sum() * 0.0
            return zero, zero
        logits = rearrange(mask_logits, "b t c h w -> (b t) c h w")
        flat_masks = rearrange(masks.long(), "b t h w -> (b t) h w")
        dice = soft_dice_loss(logits, flat_masks) if self.config["dice_weight"] > 0 else logits.sum() * 0.0
        return masked_cross_entropy(logits, flat_masks), dice

    def forward(self, frames: torch.Tensor, rgb: torch.Tensor, mask_logits: Optional[torch.Tensor],
                masks: Optional[torch.Tensor], latents: Optional[Latents], step: int,
                last_layer: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Autoencoder-side loss: (loss_total, logs). frames/rgb [B,T,3,H,W]; masks int64 [B,T,H,W] or None."""
        cfg = self.config
        l1 = (rgb - frames).abs().mean()
        lpips = self._perceptual_loss(frames, rgb) if cfg["lpips_weight"] > 0 else l1.new_zeros(())
        reconstruction = cfg["l1_weight"] * l1 + cfg["lpips_weight"] * lpips
        ce, dice = self._semantic_losses(mask_logits, masks)
        reg = latents.motion_preact.float().pow(2).mean() if latents is not None and latents.motion_preact is not None \
            else l1.new_zeros(())
        total = reconstruction + cfg["ce_weight"] * ce.to(l1.device) + cfg["dice_weight"] * dice.to(l1.device) \
            + cfg["motion_reg_weight"] * reg
        g_adv, d_weight = l1.new_zeros(()), l1.new_zeros(())
        if self.gan_active(step):
            g_adv = sum(hinge_g_loss(logits) for logits in self.discriminator(rgb))
            d_weight = self._gan_weight(reconstruction, g_adv, last_layer)
            total = total + d_weight * g_adv
        logs = {"loss_total": total, "l1": l1, "lpips": lpips, "ce": ce, "dice": dice, "reg": reg, "g_adv": g_adv,
                "d_loss": l1.new_zeros(()), "d_weight": d_weight, "psnr": psnr(rgb, frames),
                "mask_iou": mask_iou(mask_logits, masks) if mask_logits is not None and masks is not None
                else l1.new_tensor(float("nan"))}
        return total, {key: value.detach() for key, value in logs.items()}

    def _gan_weight(self, reconstruction: torch.Tensor, g_adv: torch.Tensor,
                    last_layer: Optional[torch.Tensor]) -> torch.Tensor:
        gan = self.config["gan"]
        if not gan["adaptive"] or not torch.is_grad_enabled():
            return g_adv.new_tensor(float(gan["weight"]))
        if last_layer is None:
            raise ValueError("loss.gan.adaptive needs last_layer (the autoencoder's last_layer())")
        return gan["weight"] * adaptive_gan_weight(reconstruction, g_adv, last_layer, gan["max_adaptive_weight"])

    def discriminator_loss(self, frames: torch.Tensor, rgb: torch.Tensor, step: int
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss of every discriminator on real frames vs detached reconstructions."""
        if not self.gan_active(step):
            zero = frames.new_zeros(())
            return zero, {"d_loss": zero, "logits_real": zero, "logits_fake": zero}
        real = self.discriminator(frames.detach())
        fake = self.discriminator(rgb.detach())
        d_loss = sum(hinge_d_loss(r, f) for r, f in zip(real, fake))
        logs = {"d_loss": d_loss, "logits_real": sum(r.mean() for r in real) / len(real),
                "logits_fake": sum(f.mean() for f in fake) / len(fake)}
        return d_loss, {key: value.detach() for key, value in logs.items()}
