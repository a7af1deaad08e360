"""FVD (StyleGAN-V protocol) against published reference values, plus its pieces."""
from pathlib import Path

import numpy as np
import pytest
import torch

from evals.metrics.fvd import FeatureStats, I3DFeatures, PROTOCOL, compute_fvd, frechet_distance, preprocess_for_i3d
from evals.metrics.i3d_net import max_pool_same
from tools.core.errors import UserError


@pytest.fixture(scope="module")
def extractor() -> I3DFeatures:
    return I3DFeatures("cpu", batch_size=8, progress=False)


@pytest.mark.parametrize("frames, expected", [(10, 569.23), (30, 151.26)])
def test_zeros_vs_ones_matches_reference(extractor, frames, expected):
    zeros = torch.zeros(8, frames, 3, 64, 64)
    ones = torch.ones(8, frames, 3, 64, 64)
    assert compute_fvd(zeros, ones, extractor=extractor) == pytest.approx(expected, abs=1.0)


def test_uint8_and_float_inputs_agree_and_batches_concatenate(extractor):
    generator = torch.Generator().manual_seed(1)
    videos = torch.randint(0, 256, (2, 9, 3, 32, 48), dtype=torch.uint8, generator=generator)
    from_uint8 = extractor(videos)
    from_float = extractor([videos[:1].float() / 255, videos[1:].float() / 255])
    assert from_uint8.shape == (2, 400) and from_uint8.dtype == np.float64
    assert not np.allclose(from_uint8[0], from_uint8[1])
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-4)


def test_preprocess_shorter_side_and_centre_crop():
    videos = torch.zeros(1, 2, 3, 160, 240, dtype=torch.uint8)
    videos[..., :, 120:] = 255  # right half white
    out = preprocess_for_i3d(videos)
    assert out.shape == (1, 3, 2, 224, 224)
    # Bilinear resizing rounds differently with the thread count: compare to float precision.
    assert out.min() == pytest.approx(-1, abs=1e-5) and out.max() == pytest.approx(1, abs=1e-5)
    torch.testing.assert_close(out[0, 0, 0, :, 0], torch.full((224,), -1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, 0, 0, :, -1], torch.full((224,), 1.0), atol=1e-5, rtol=0)


def test_max_pool_same_pads_after_with_minus_infinity():
    x = -torch.arange(1.0, 5.0).view(1, 1, 1, 1, 4)  # all negative: a zero pad would win
    pooled = max_pool_same(x, (1, 1, 2), (1, 1, 2))
    assert pooled.flatten().tolist() == [-1.0, -3.0]
    odd = max_pool_same(x[..., :3], (1, 1, 2), (1, 1, 2))
    assert odd.flatten().tolist() == [-1.0, -3.0]  # the last window is [x3, pad]: pad goes after


def test_frechet_distance_of_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    a = FeatureStats(np.zeros(3), np.diag([1.0, 4.0, 9.0]), 100)
    b = FeatureStats(np.array([1.0, 0.0, 2.0]), np.diag([4.0, 4.0, 1.0]), 100)
    # Diagonal covariances: sum (sqrt(a_i) - sqrt(b_i))^2 = 1 + 0 + 4, mean term 1 + 4.
    assert frechet_distance(a, b) == pytest.approx(10.0, abs=1e-9)
    features = rng.normal(size=(50, 4))
    same = FeatureStats.from_features(features)
    assert frechet_distance(same, same) == pytest.approx(0.0, abs=1e-6)


def test_stats_cache_round_trip_and_protocol_check(tmp_path: Path, extractor):
    stats = FeatureStats.from_features(np.random.default_rng(2).normal(size=(5, 400)))
    path = tmp_path / "cache" / "real.npz"
    stats.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["real.npz"]  # no temporary left behind
    loaded = FeatureStats.load(path)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.count == 5
    np.savez(tmp_path / "old.npz", mu=stats.mu, sigma=stats.sigma, count=5, protocol="other")
    with pytest.raises(UserError, match="old.npz"):
        FeatureStats.load(tmp_path / "old.npz")
    assert PROTOCOL in str(np.load(path)["protocol"])


def test_real_statistics_are_cached_by_name(tmp_path: Path, extractor):
    real = torch.zeros(1, 9, 3, 16, 16)
    fake = torch.ones(1, 9, 3, 16, 16)
    first = compute_fvd(fake, real, extractor=extractor, real_cache_dir=tmp_path, real_cache_name="zeros")
    assert (tmp_path / "zeros.npz").is_file()
    # The cache, not the (different) real videos passed now, supplies the real statistics.
    second = compute_fvd(fake, fake, extractor=extractor, real_cache_dir=tmp_path, real_cache_name="zeros")
    assert second == pytest.approx(first)
    with pytest.raises(UserError, match="cache name"):
        compute_fvd(fake, real, extractor=extractor, real_cache_dir=tmp_path, real_cache_name="../x")


def test_too_few_frames_is_a_user_error(extractor):
    with pytest.raises(UserError, match="at least 9 frames"):
        extractor(torch.zeros(1, 8, 3, 16, 16))


def test_script_on_tensor_and_frame_folders(tmp_path, capsys, monkeypatch, extractor):
    from PIL import Image

    from evals import eval_fvd

    monkeypatch.setattr(eval_fvd, "I3DFeatures", lambda *args, **kwargs: extractor)  # reuse loaded weights
    torch.save(torch.full((1, 9, 3, 16, 16), 255, dtype=torch.uint8), tmp_path / "white.pt")
    video = tmp_path / "real" / "video_0"
    video.mkdir(parents=True)
    for frame in range(9):
        Image.new("RGB", (16, 16)).save(video / f"image_{frame}.png")
    torch.save(torch.zeros(1, 9, 3, 16, 16, dtype=torch.uint8), tmp_path / "black.pt")
    results = []
    for real in ("black.pt", "real"):
        assert eval_fvd.main([str(tmp_path / "white.pt"), str(tmp_path / real), "--device", "cpu"]) == 0
        results.append(float(capsys.readouterr().out.splitlines()[-1]))
    assert results[0] == pytest.approx(results[1]) and results[0] > 100
    assert eval_fvd.main([str(tmp_path / "white.pt"), str(tmp_path / "real"), "--num_frames", "12"]) == 2
    assert "--num_frames 12" in capsys.readouterr().err
