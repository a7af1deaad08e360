"""PSNR and SSIM per frame: hand checks and agreement with torchmetrics."""
import math

import pytest
import torch

from evals.metrics.image import paired_image_files, psnr, ssim
from tools.core.errors import UserError


def _frames(seed: int, n: int = 3, size: tuple[int, int] = (32, 40)) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_identical_frames():
    x = _frames(0)
    assert torch.isinf(psnr(x, x)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64))


def test_psnr_of_constant_offsets():
    x = torch.full((2, 3, 16, 16), 0.3)
    assert psnr(x, x + 0.1).tolist() == pytest.approx([20.0, 20.0])  # mse 0.01 -> 10*log10(100)
    zeros = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    fifty_one = torch.full((1, 3, 16, 16), 51, dtype=torch.uint8)  # 51/255 = 0.2, mse 0.04
    assert psnr(zeros, fifty_one).item() == pytest.approx(-10 * math.log10(0.04))


def test_ssim_of_constant_frames():
    # Constant frames have no variance or covariance, so SSIM is the luminance term alone:
    # (2*a*b + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 1)^2.
    a, b, c1 = 0.5, 0.75, 1e-4  # both exact in float32
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)).item()
    assert value == pytest.approx(expected, abs=1e-9)  # 0.92309...


def test_agrees_with_torchmetrics():
    import torchmetrics.functional.image as functional  # a requirement: fail, never skip, when it is missing
    x, y = _frames(1), (_frames(1) * 0.8 + _frames(2) * 0.2)
    # torchmetrics 1.x averages its SSIM map over the whole frame, reflection-padded at the borders;
    # the standard (Wang et al., scikit-image) averages where the 11x11 window fits: crop 5 pixels.
    _, full_map = functional.structural_similarity_index_measure(
        x, y, data_range=1.0, reduction="none", return_full_image=True)
    reference_ssim = full_map[..., 5:-5, 5:-5].flatten(1).mean(1)
    torch.testing.assert_close(ssim(x, y).float(), reference_ssim.float(), atol=1e-5, rtol=0)
    reference_psnr = functional.peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(psnr(x, y).float(), reference_psnr.float(), atol=1e-4, rtol=0)


def test_ssim_falls_with_noise():
    x = _frames(3)
    noise = _frames(4) - 0.5
    values = [ssim(x, (x + level * noise).clamp(0, 1)).mean().item() for level in (0.05, 0.2, 0.5)]
    assert values[0] > values[1] > values[2]


def test_paired_files_need_matching_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder, names in (("a", ["f10.png", "f2.png"]), ("b", ["f2.png", "f10.png"])):
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    pairs = paired_image_files(tmp_path / "a", tmp_path / "b")
    assert [p.name for p, _ in pairs] == ["f2.png", "f10.png"]  # natural order
    (tmp_path / "b" / "f3.png").write_bytes(b"")
    with pytest.raises(UserError, match="f3.png"):
        paired_image_files(tmp_path / "a", tmp_path / "b")


def test_script_reports_means(tmp_path, capsys):
    from PIL import Image

    from evals import eval_psnr_ssim

    for folder, value in (("a", 100), ("b", 151)):  # offset 51/255 = 0.2 -> PSNR 13.98 dB
        (tmp_path / folder).mkdir()
        Image.new("RGB", (16, 16), (value, value, value)).save(tmp_path / folder / "frame_0.png")
    assert eval_psnr_ssim.main([str(tmp_path / "a"), str(tmp_path / "b"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert float(out[-2].split()[-1]) == pytest.approx(-10 * math.log10(0.04), abs=1e-3)
    assert 0.0 < float(out[-1].split()[-1]) < 1.0
