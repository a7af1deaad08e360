"""Segmenter heads (flat and factorised), the factor loss, cached frames and the photometric augmentation."""

import numpy as np
import pytest
import torch

import main
from tests.test_segmenter import HEIGHT, WIDTH, _segment_args, _write_video
from tools.core.errors import UserError
from tools.data.classes import COLORS, MATERIALS, NUM_CLASSES, SHAPES, class_id
from tools.data.frames import LabeledFrames, photometric, random_blur
from tools.predict.segmenter_io import build_task_segmenter, load_segmenter
from tools.train.seg_losses import SegmentationLoss, boundary_targets, factor_targets

TINY = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


def _model(head: str, boundary: bool = False):
    torch.manual_seed(0)
    return build_task_segmenter({"head": head, "boundary": boundary, **TINY})


def test_factorised_scores_normalise_over_the_49_classes_and_follow_the_class_id_formula():
    model = _model("factorised").eval()
    with torch.no_grad():
        scores, factors = model(torch.rand(2, 3, 32, 48), with_factors=True)
    assert scores.shape == (2, NUM_CLASSES, 32, 48)
    assert torch.allclose(scores.logsumexp(1), torch.zeros(2, 32, 48), atol=1e-5)
    log_fg = torch.nn.functional.logsigmoid(factors["objectness"][:, 0])
    log_p = {name: factors[name].log_softmax(1) for name in ("shape", "material", "colour")}
    for s in range(len(SHAPES)):
        for m in range(len(MATERIALS)):
            for c in range(len(COLORS)):
                expected = log_fg + log_p["shape"][:, s] + log_p["material"][:, m] + log_p["colour"][:, c]
                assert torch.allclose(scores[:, class_id(s, m, c)], expected, atol=1e-5)


def test_flat_head_still_gives_49_logits_and_unknown_heads_are_refused():
    model = _model("flat").eval()
    with torch.no_grad():
        scores, factors = model(torch.rand(1, 3, 32, 48), with_factors=True)
    assert scores.shape == (1, NUM_CLASSES, 32, 48) and factors == {}
    assert not torch.allclose(scores.logsumexp(1), torch.zeros(1, 32, 48), atol=1e-3)  # raw logits
    with pytest.raises(UserError, match="model.head"):
        build_task_segmenter({"head": "hierarchical", **TINY})


def _train_on_fixed_batch(model, rgb: torch.Tensor, target: torch.Tensor, steps: int) -> list[dict[str, float]]:
    """AdamW steps on one batch with the full segmentation loss; each step's loss parts and 'total'."""
    criterion = SegmentationLoss(1.0, 1.0, 1.0, boundary_weight=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = []
    for _ in range(steps):
        scores, factors = model(rgb, with_factors=True)
        loss, parts = criterion(scores, target, factors)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({**parts, "total": loss.item()})
    return history


def test_factor_targets_and_factor_loss_fall_on_a_fixed_batch():
    mask = torch.tensor([[0, class_id("cylinder", "rubber", "yellow"), -1]])
    targets = factor_targets(mask)
    assert [targets[k].tolist() for k in ("shape", "material", "colour")] == [[[-1, 2, -1]], [[-1, 1, -1]],
                                                                             [[-1, 1 - 1 + 7, -1]]]
    model = _model("factorised")
    rgb = torch.rand(2, 3, 32, 48) * 0.3
    target = torch.zeros(2, 32, 48, dtype=torch.long)
    target[:, 8:20, 10:30] = class_id("sphere", "metal", "purple")
    rgb[:, 2, 8:20, 10:30] = 0.9
    losses = _train_on_fixed_batch(model, rgb, target, 25)
    assert {"factor_shape", "factor_material", "factor_colour"} <= set(losses[-1])
    assert losses[-1]["total"] < 0.5 * losses[0]["total"]


def test_cached_frames_equal_read_frames(tmp_path):
    rng = np.random.default_rng(1)
    _write_video(tmp_path / "train" / "video_0", rng, with_mask=True)
    plain = LabeledFrames(tmp_path, ["train"], (16, 24))
    cached = LabeledFrames(tmp_path, ["train"], (16, 24), cache=True)
    for index in (0, 7, 21):
        assert torch.equal(plain[index]["mask"], cached[index]["mask"])
        assert torch.allclose(plain[index]["image"], cached[index]["image"], atol=0.5 / 255 + 1e-6)


def test_photometric_augmentation_stays_in_range_and_blur_keeps_a_flat_image():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 20, 30)
    out = photometric(rgb, {"brightness": 0.3, "contrast": 0.3, "saturation": 0.2, "channel_gain": 0.1,
                            "gamma": 0.3, "blur": 1.0, "noise": 0.05})
    assert out.shape == rgb.shape and 0 <= out.min() and out.max() <= 1 and not torch.equal(out, rgb)
    flat = torch.full((3, 3, 10, 12), 0.4)
    assert torch.allclose(random_blur(flat, 1.5, probability=1.0), flat, atol=1e-5)
    spike = torch.zeros(1, 3, 9, 9)
    spike[..., 4, 4] = 1.0
    blurred = random_blur(spike, 1.5, probability=1.0)
    assert blurred[..., 4, 4].max() < 1.0 and torch.allclose(blurred.sum((-2, -1)), spike.sum((-2, -1)), atol=1e-4)


def test_boundary_targets_mark_contacts_between_objects_only():
    red, blue = class_id("cube", "rubber", "red"), class_id("sphere", "rubber", "blue")
    mask = torch.zeros(1, 6, 8, dtype=torch.long)
    mask[0, 1:5, 1:4], mask[0, 1:5, 4:7] = red, blue
    mask[0, 0, 0] = -1
    target = boundary_targets(mask)[0]
    assert target[1:5, 3:5].eq(1).all()  # both sides of the contact
    assert target[1:5, 1:3].eq(0).all() and target[1:5, 5:7].eq(0).all()  # edges against the background are not
    assert target[0, 0] == -1 and target[5].eq(0).all()


@pytest.mark.parametrize("head", ["flat", "factorised"])
def test_boundary_channel_keeps_the_class_scores_and_learns_a_contact_on_a_fixed_batch(head):
    model = _model(head, boundary=True)
    rgb = torch.rand(2, 3, 32, 48) * 0.2
    target = torch.zeros(2, 32, 48, dtype=torch.long)
    target[:, 8:24, 8:24], target[:, 8:24, 24:40] = class_id("cube", "rubber", "red"), class_id("cylinder",
                                                                                            "rubber", "red")
    rgb[:, 0, 8:24, 8:40] = 0.9
    rgb[:, 0, 8:24, 23:25] = 0.5  # a darker seam where the two red objects touch
    with torch.no_grad():
        scores, factors = model.eval()(rgb, with_factors=True)
        edges = model.segment_with_boundary(rgb, tta=True)[1]
    assert scores.shape == (2, NUM_CLASSES, 32, 48) and factors["boundary"].shape == (2, 1, 32, 48)
    assert torch.equal(scores, model(rgb)) and edges.shape == (2, 32, 48)
    assert 0 <= edges.min() and edges.max() <= 1
    assert torch.allclose(edges, model.segment_with_boundary(rgb.flip(-1), tta=True)[1].flip(-1), atol=1e-5)
    losses = _train_on_fixed_batch(model.train(), rgb, target, 30)
    assert losses[-1]["boundary"] < 0.5 * losses[0]["boundary"]
    assert _model(head).segment_with_boundary(rgb)[1] is None  # without the channel


def test_factorised_segment_run_trains_and_loads(tmp_path):
    rng = np.random.default_rng(2)
    for split, video_id in (("train", 0), ("val", 1000)):
        _write_video(tmp_path / "data" / split / f"video_{video_id}", rng, with_mask=True)
    args = _segment_args(tmp_path / "data", tmp_path / "results", "train.max_steps=2", "model.head=factorised",
                         "data.cache=true")
    assert main.main(args) == 0
    model = load_segmenter(tmp_path / "results" / "segment_main_CLEVRER_42" / "model_last.pth")
    assert model.head is not None and model.trained_size == (HEIGHT, WIDTH)
    with torch.no_grad():
        scores = model.segment(torch.rand(1, 3, HEIGHT, WIDTH))
    assert torch.allclose(scores.logsumexp(1), torch.zeros(1, HEIGHT, WIDTH), atol=1e-4)
