"""Guided-filter upsampling of the segmenter's foreground (models/guided_filter.py, Segmenter.upsample)."""
import pytest
import torch
import torch.nn.functional as F

from models import ModelConfigError
from models.guided_filter import box_mean, guided_filter, refine_foreground
from models.segmenter import Segmenter, build_segmenter
from tools.data.classes import NUM_CLASSES


def _square_scene(height: int = 40, width: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """A red square on a grey floor [1, 3, H, W] and its true foreground [1, H, W]."""
    rgb = torch.full((1, 3, height, width), 0.5)
    truth = torch.zeros(1, height, width)
    truth[:, 12:27, 20:37] = 1.0
    rgb[:, 0][truth > 0], rgb[:, 1][truth > 0], rgb[:, 2][truth > 0] = 0.8, 0.1, 0.1
    return rgb, truth


def test_box_mean_averages_windows_cut_at_the_border():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    mean = box_mean(x, 1)
    assert torch.allclose(mean[0, 0, 1, 1], x[0, 0, :3, :3].mean())
    assert torch.allclose(mean[0, 0, 0, 0], x[0, 0, :2, :2].mean())  # a corner window holds 4 pixels


def test_guided_filter_keeps_a_constant_and_a_source_that_is_linear_in_the_guide():
    guide = torch.rand(2, 3, 20, 30)
    constant = torch.full((2, 20, 30), 0.3)
    assert torch.allclose(guided_filter(guide, constant, 3, 1e-4), constant, atol=1e-4)
    linear = 0.2 + 0.5 * guide[:, 0] - 0.3 * guide[:, 2]
    assert torch.allclose(guided_filter(guide, linear, 3, 1e-8), linear, atol=1e-3)


def test_guided_filter_sharpens_a_blurred_outline_to_the_guides_edge():
    rgb, truth = _square_scene()
    # The outline a low-resolution segmenter gives: half resolution, upsampled bilinearly.
    coarse = F.interpolate(F.avg_pool2d(truth[:, None], 2), size=truth.shape[-2:], mode="bilinear")[:, 0]
    refined = guided_filter(rgb, coarse, 4, 1e-4)

    def wrong(p: torch.Tensor) -> int:
        return int(((p > 0.5) != (truth > 0.5)).sum())

    assert wrong(coarse) > 0 and wrong(refined) == 0


def test_refine_foreground_gives_normalised_log_probs_that_keep_each_object_class_share():
    rgb, _ = _square_scene()
    scores = torch.randn(1, NUM_CLASSES, 40, 60)
    refined = refine_foreground(scores, rgb)
    assert refined.shape == scores.shape and refined.dtype == torch.float32
    assert torch.allclose(refined.logsumexp(1), torch.zeros(1, 40, 60), atol=1e-5)
    # Among the object classes the ratios are the input's: only p(foreground) moves.
    assert torch.allclose(refined[:, 1:].log_softmax(1), scores[:, 1:].log_softmax(1), atol=1e-4)


def test_segmenter_refines_only_when_it_upsamples_and_refuses_an_unknown_mode():
    torch.manual_seed(0)
    net = Segmenter(classes=NUM_CLASSES, encoder_depth=3, decoder_channels=(32, 16, 8)).eval()
    rgb = torch.rand(1, 3, 40, 60)
    with torch.no_grad():
        guided_same = net.segment(rgb)
        guided_small = net.segment(rgb, size=(20, 30))
        net.upsample = "bilinear"
        plain_same = net.segment(rgb)
        plain_small = net.segment(rgb, size=(20, 30))
    assert torch.equal(guided_same, plain_same)  # nothing to upsample: the scores are the network's
    assert guided_small.shape == plain_small.shape == (1, NUM_CLASSES, 40, 60)
    assert not torch.allclose(guided_small.log_softmax(1), plain_small.log_softmax(1))
    with pytest.raises(ModelConfigError, match="model.upsample"):
        net.upsample = "nearest"  # refused when set, so no segment call meets it
    assert net.upsample == "bilinear"
    with pytest.raises(ModelConfigError, match="model.upsample"):
        build_segmenter({"encoder_depth": 3, "decoder_channels": [32, 16, 8], "upsample": "cubic"})
    built = build_segmenter({"encoder_depth": 3, "decoder_channels": [32, 16, 8], "upsample": "bilinear",
                             "guided_radius": 2})
    assert built.upsample == "bilinear" and built.guided_radius == 2
