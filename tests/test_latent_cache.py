"""Stage 2's per-clip latents: cached and freshly encoded clips agree, and static latents of any observed set follow
from the per-frame context features exactly as stage 1 computes them."""
import torch

from models.autoencoder import VideoAutoencoder
from tools.train.latent_cache import ClipLatents

MODEL = {"channels": 8, "encoder_mult": [1, 2], "motion_mult": [1, 2], "decoder_mult": [1, 2], "num_classes": 0}


def test_cached_latents_equal_fresh_ones_and_static_follows_from_context():
    torch.manual_seed(0)
    model = VideoAutoencoder(MODEL).eval()
    frames = torch.rand(3, 6, 3, 16, 16) * 2 - 1
    batch = {"path": ["a.mp4", "a.mp4", "b.mp4"], "start": [0, 6, 0]}
    fresh = ClipLatents(model, cond_frames=3, keep=False)
    cached = ClipLatents(model, cond_frames=3, keep=True)
    motion, features = fresh.encode(batch, frames)
    assert motion.shape == (3, 6, 4, 8, 8) and features.shape[:2] == (3, 6)
    cached.encode({"path": batch["path"][:1], "start": batch["start"][:1]}, frames[:1])  # one clip stored first
    again_motion, again_features = cached.encode(batch, frames)
    assert len(cached.stored) == 3
    assert torch.allclose(again_motion, motion, atol=1e-5)  # the same up to batch-size-dependent rounding
    assert torch.allclose(again_features, features, atol=2e-2)  # kept as bf16
    other = frames.clone()
    other[:, :, :, :4] = 0.0  # a cached clip is read back, not encoded again
    assert torch.equal(cached.encode(batch, other)[0], again_motion)
    with torch.no_grad():
        scene, obj = model.encode_static(frames[:, [1, 4]])
        scene_f, obj_f = model.static_from_context(features[:, [1, 4]])
    assert torch.allclose(scene, scene_f, atol=1e-5) and torch.allclose(obj, obj_f, atol=1e-5)
