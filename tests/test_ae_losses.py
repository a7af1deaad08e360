"""Stage-1 losses: semantic terms with unknown pixels, metrics, GAN terms, and the loss falling on a fixed batch."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.autoencoder import VideoAutoencoder
from tools.train.ae_losses import LOG_KEYS, FirstStageLoss, mask_iou, masked_cross_entropy, psnr, soft_dice_loss
from tools.core.errors import UserError

NARROW = {"channels": 8, "scene_channels": 4, "object_channels": 4, "motion_channels": 4}


class BlurredL1(nn.Module):
    """Cheap perceptual stand-in with the LPIPS call shape: two [N,3,H,W] batches -> [N] distances."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (F.avg_pool2d(x, 4) - F.avg_pool2d(y, 4)).abs().flatten(1).mean(1)


def moving_squares(batch: int = 2, frames: int = 6, height: int = 32, width: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey floor with one coloured square per video moving right; masks hold its class id."""
    rgb = torch.full((batch, frames, 3, height, width), -0.2)
    masks = torch.zeros(batch, frames, height, width, dtype=torch.long)
    colours = torch.tensor([[0.9, -0.8, -0.8], [-0.8, -0.8, 0.9]])
    for b in range(batch):
        for t in range(frames):
            top, left = 8 + 4 * b, 4 + 4 * t
            rgb[b, t, :, top:top + 10, left:left + 10] = colours[b].view(3, 1, 1)
            masks[b, t, top:top + 10, left:left + 10] = 1 + 8 * b
    return rgb, masks


def test_loss_falls_over_50_adam_steps_on_a_fixed_batch():
    torch.manual_seed(0)
    model = VideoAutoencoder(NARROW)
    loss_fn = FirstStageLoss({"lpips_frames": 2}, perceptual=BlurredL1())
    frames, masks = moving_squares(frames=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for step in range(50):
        rgb, mask_logits, latents = model(frames, frames[:, :2])
        total, logs = loss_fn(frames, rgb, mask_logits, masks, latents, step)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(logs)
    assert set(LOG_KEYS) <= set(history[0])
    first, last = history[0], history[-1]
    # Measured: total 4.8 -> 0.94, CE 3.9 -> 0.54, PSNR 14.9 -> 20.3 dB, mask IoU 0.00 -> 0.63.
    # Asserted: total and CE at least 3x lower, PSNR up by 3 dB, mask IoU above 0.3.
    assert last["loss_total"] < first["loss_total"] / 3
    assert last["ce"] < first["ce"] / 3
    assert last["psnr"] > first["psnr"] + 3
    assert last["mask_iou"] > 0.3


def test_unknown_masks_are_ignored_and_give_zero_semantic_loss():
    logits = torch.randn(2, 49, 8, 8, requires_grad=True)
    unknown = torch.full((2, 8, 8), -1, dtype=torch.long)
    assert masked_cross_entropy(logits, unknown) == 0
    partly_known = unknown.clone()
    partly_known[0, :4] = 3
    expected = F.cross_entropy(logits[0, :, :4].unsqueeze(0), partly_known[0, :4].unsqueeze(0))
    assert torch.allclose(masked_cross_entropy(logits, partly_known), expected)
    loss_fn = FirstStageLoss({"lpips_weight": 0.0})
    frames = torch.zeros(1, 2, 3, 8, 8)
    total, logs = loss_fn(frames, frames, logits.view(1, 2, 49, 8, 8), None, None, step=0)
    assert logs["ce"] == 0 and logs["dice"] == 0 and math.isnan(logs["mask_iou"])
    total.backward()  # zero loss still reaches the semantic head (DDP needs every parameter used)
    assert logits.grad is not None


def test_dice_iou_and_psnr_against_known_values():
    masks = torch.randint(0, 5, (2, 16, 16))
    masks[0, 0, 0] = -1
    perfect = F.one_hot(masks.clamp(min=0), 49).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, masks) < 1e-3
    assert mask_iou(perfect, masks) == 1.0
    shifted = F.one_hot((masks.clamp(min=0) + 1) % 49, 49).permute(0, 3, 1, 2).float() * 50
    assert mask_iou(shifted, masks) == 0.0 and soft_dice_loss(shifted, masks) > 0.99
    target = torch.zeros(2, 3, 4, 4)
    assert torch.isclose(psnr(target + 0.2, target), torch.tensor(20.0))  # 10 log10(4 / 0.04)


def test_gan_terms_have_the_right_signs_and_a_finite_adaptive_weight():
    torch.manual_seed(0)
    model = VideoAutoencoder(NARROW)
    gan = {"enabled": True, "disc_start": 5, "channels": 8, "layers": 2}
    loss_fn = FirstStageLoss({"lpips_frames": 2, "gan": gan}, perceptual=BlurredL1())
    frames, masks = moving_squares(frames=4)
    rgb, mask_logits, latents = model(frames, frames[:, :2])

    _, before = loss_fn(frames, rgb, mask_logits, masks, latents, step=4, last_layer=model.last_layer())
    assert before["g_adv"] == 0 and before["d_weight"] == 0
    d_before, _ = loss_fn.discriminator_loss(frames, rgb, step=4)
    assert d_before == 0

    total, after = loss_fn(frames, rgb, mask_logits, masks, latents, step=5, last_layer=model.last_layer())
    assert torch.isfinite(after["d_weight"]) and after["d_weight"] > 0
    assert torch.isfinite(total) and total.ndim == 0
    d_loss, d_logs = loss_fn.discriminator_loss(frames, rgb, step=5)
    assert d_loss.ndim == 0 and d_loss >= 0 and set(d_logs) == {"d_loss", "logits_real", "logits_fake"}
    d_loss.backward()
    assert all(p.grad is not None for p in loss_fn.discriminator_parameters())


def test_constant_gan_weight_and_config_errors():
    loss_fn = FirstStageLoss({"lpips_weight": 0.0, "gan": {"enabled": True, "adaptive": False, "weight": 0.25,
                                                            "disc_3d": False, "channels": 8, "layers": 2}})
    frames = torch.zeros(1, 2, 3, 16, 16)
    _, logs = loss_fn(frames, frames, None, None, None, step=0)
    assert logs["d_weight"] == 0.25
    with pytest.raises(UserError, match="gan.lr_typo"):
        FirstStageLoss({"gan": {"lr_typo": 1}})
    with pytest.raises(UserError, match="disc_2d"):
        FirstStageLoss({"gan": {"enabled": True, "disc_2d": False, "disc_3d": False}})


def test_real_lpips_is_the_default_perceptual_term():
    torch.manual_seed(0)
    loss_fn = FirstStageLoss({"lpips_frames": None})
    frames, _ = moving_squares(batch=1, frames=2, height=64, width=64)
    noisy = (frames + 0.3 * torch.randn_like(frames)).clamp(-1, 1).requires_grad_(True)
    _, same = loss_fn(frames, frames, None, None, None, step=0)
    total, different = loss_fn(frames, noisy, None, None, None, step=0)
    assert same["lpips"].abs() < 1e-6
    assert different["lpips"] > 0.05
    total.backward()
    assert torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0
