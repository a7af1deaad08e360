"""Stage-1 networks: latent/output shapes, no future leak, identity round trip, discriminators."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models.autoencoder import VideoAutoencoder
from models.first_stage import build_first_stage
from models.latents import Latents
from models.discriminators import PatchDiscriminator2d, PatchDiscriminator3d, hinge_d_loss, hinge_g_loss
from models.identity_autoencoder import IdentityAutoencoder
from models import ModelConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "autoencoder"
NARROW = {"channels": 8, "scene_channels": 4, "object_channels": 4, "motion_channels": 4}


def video(batch: int, frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 3, height, width, generator=generator) * 2 - 1


def test_tiny_config_shapes_of_every_latent_and_output():
    config = OmegaConf.load(CONFIGS / "tiny.yaml")
    torch.manual_seed(0)
    model = build_first_stage(config).eval()
    frames = video(1, 22, config.data.height, config.data.width)
    with torch.no_grad():
        latents = model.encode(frames, frames[:, :11])
        rgb, mask_logits = model.decode(latents)
    assert latents.scene.shape == (1, 8, 8, 12)
    assert latents.object.shape == (1, 8, 8, 12)
    assert latents.motion.shape == (1, 22, 4, 8, 12)
    assert model.latent_shapes(64, 96) == {"scene": (8, 8, 12), "object": (8, 8, 12), "motion": (4, 8, 12)}
    assert rgb.shape == (1, 22, 3, 64, 96) and mask_logits.shape == (1, 22, 49, 64, 96)
    assert rgb.dtype == torch.float32 and rgb.abs().max() <= 1
    assert latents.motion.abs().max() < 1  # tanh bound


def test_full_resolution_is_supported_without_divisibility_by_16():
    model = VideoAutoencoder(NARROW)
    assert model.latent_shapes(160, 240)["motion"] == (4, 20, 30)
    with pytest.raises(ModelConfigError, match="divisible"):
        model.latent_shapes(100, 90)


def test_static_latents_do_not_see_future_frames():
    torch.manual_seed(0)
    model = VideoAutoencoder(NARROW).eval()
    past_and_future = video(2, 8, 32, 48, seed=1)
    other_future = past_and_future.clone()
    other_future[:, 4:] = video(2, 4, 32, 48, seed=2)
    with torch.no_grad():
        first = model.encode(past_and_future, past_and_future[:, :4])
        second = model.encode(other_future, other_future[:, :4])
    assert torch.equal(first.scene, second.scene)
    assert torch.equal(first.object, second.object)
    assert torch.equal(first.motion[:, :4], second.motion[:, :4])  # observed frames' motion unchanged too
    assert not torch.equal(first.motion[:, 4:], second.motion[:, 4:])  # the test can fail: future motion differs


def test_decode_rebuilds_every_frame_from_its_own_motion_latent():
    torch.manual_seed(0)
    model = VideoAutoencoder(NARROW).eval()
    frames = video(1, 6, 32, 48)
    with torch.no_grad():
        latents = model.encode(frames, frames[:, :3])
        rgb, _ = model.decode(latents)
        changed = latents.motion.clone()
        changed[:, 5] = -changed[:, 5]
        rgb_changed, _ = model.decode(Latents(latents.scene, latents.object, changed))
    assert rgb.shape[1] == 6
    assert torch.equal(rgb[:, :5], rgb_changed[:, :5])
    assert not torch.equal(rgb[:, 5], rgb_changed[:, 5])


def test_mask_input_switch_adds_49_channels_and_requires_probabilities():
    model = VideoAutoencoder({**NARROW, "use_mask_input": True}).eval()
    assert model.context_encoder.conv_in.in_channels == 3 + 49
    frames = video(1, 4, 32, 48)
    probs = torch.softmax(torch.randn(1, 4, 49, 32, 48), dim=2)
    with torch.no_grad():
        latents = model.encode(frames, frames[:, :2], probs, probs[:, :2])
    assert latents.motion.shape == (1, 4, 4, 4, 6)
    with pytest.raises(ModelConfigError, match="use_mask_input"):
        model.encode(frames, frames[:, :2])


def test_construction_is_deterministic_per_seed_and_rejects_unknown_keys():
    torch.manual_seed(3)
    first = VideoAutoencoder(NARROW).state_dict()
    torch.manual_seed(3)
    second = VideoAutoencoder(NARROW).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    with pytest.raises(ModelConfigError, match="chanels"):
        VideoAutoencoder({"chanels": 8})


def test_base_config_builds_with_a_channels_knob_that_scales_size():
    config = OmegaConf.load(CONFIGS / "base.yaml")
    base = build_first_stage(config)
    half = build_first_stage({**OmegaConf.to_container(config.model), "channels": 32})
    base_params = sum(p.numel() for p in base.parameters())
    half_params = sum(p.numel() for p in half.parameters())
    assert 3.0 < base_params / half_params < 4.5  # conv weights scale with width squared
    assert base.latent_shapes(config.data.height, config.data.width)["motion"] == (4, 20, 30)


@pytest.mark.parametrize("pool_factor", [1, 2])
def test_identity_autoencoder_round_trip(pool_factor):
    model = build_first_stage({"type": "identity", "pool_factor": pool_factor})
    assert isinstance(model, IdentityAutoencoder)
    frames = video(2, 5, 16, 24)
    latents = model.encode(frames, frames[:, :3])
    rgb, mask_logits = model.decode(latents)
    assert latents.scene.shape == (2, 0, 16 // pool_factor, 24 // pool_factor) and latents.object.shape[1] == 0
    assert latents.motion.shape == (2, 5, 3, 16 // pool_factor, 24 // pool_factor)
    assert mask_logits is None and rgb.shape == frames.shape
    if pool_factor == 1:
        assert torch.equal(rgb, frames)
    else:
        # A video constant on each 2x2 block survives pooling and bilinear upsampling to within rounding.
        blocky = frames[:, :, :, ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)
        assert torch.allclose(model.encode(blocky, blocky).motion, frames[:, :, :, ::2, ::2], atol=1e-6)


def test_discriminator_shapes_and_hinge_signs():
    torch.manual_seed(0)
    frames2d = PatchDiscriminator2d(channels=8, layers=2)(torch.randn(3, 3, 32, 48))
    clips3d = PatchDiscriminator3d(channels=8, layers=2)(torch.randn(2, 6, 3, 32, 48))
    assert frames2d.shape[:2] == (3, 1) and frames2d.ndim == 4
    assert clips3d.shape[:2] == (2, 1) and clips3d.ndim == 5
    confident = hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))
    fooled = hinge_d_loss(torch.full((4,), -2.0), torch.full((4,), 2.0))
    assert confident == 0 and fooled == 3.0
    assert hinge_g_loss(torch.full((4,), 2.0)) < hinge_g_loss(torch.full((4,), -2.0))


def test_latents_detach_keeps_values():
    latents = Latents(torch.ones(1, 2, 3, 3, requires_grad=True), torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 1, 3, 3))
    detached = latents.detach()
    assert not detached.scene.requires_grad and torch.equal(detached.scene, latents.scene)
    assert detached.motion_preact is None
