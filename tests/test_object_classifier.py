"""Object classifier: crops around objects, the network's class log-probabilities, its place in the instance vote,
and `--exp objects` training, validation and resume."""
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from models.object_classifier import ObjectClassifier, class_log_probs
from tools.core.checkpoint import load_checkpoint
from tools.core.logger import read_stats
from tools.data.classes import NUM_CLASSES, class_id, class_indices
from tools.data.object_crops import (STORE_MARGIN, STORE_SIZE, VIEW_SIZE, ObjectCrops, augment_crops,
                                     crop_objects, square_boxes, view_crops)
from tools.predict.instance_vote import instance_vote
from tools.predict.segmenter_io import class_factor_table
from tools.train.object_classifier import factor_accuracy, load_object_classifier

RED_CUBE = class_id("cube", "rubber", "red")
RED_SPHERE = class_id("sphere", "rubber", "red")
BLUE_CYLINDER = class_id("cylinder", "metal", "blue")


def test_square_boxes_centre_on_the_object_and_scale_with_it():
    binary = torch.zeros(2, 40, 60, dtype=torch.bool)
    binary[0, 10:20, 30:34] = True  # 10 rows x 4 columns: the longer side is 10
    binary[1, 0:30, 0:30] = True
    boxes = square_boxes(binary, margin=1.5, min_side=4)
    assert boxes[0].tolist() == pytest.approx([32 - 7.5, 15 - 7.5, 32 + 7.5, 15 + 7.5])
    assert (boxes[1, 2] - boxes[1, 0]).item() == pytest.approx(45)


def test_crops_hold_the_object_centred_with_its_own_mask_and_colour():
    frames = torch.full((2, 3, 60, 80), 0.5)
    labels = torch.zeros(2, 60, 80, dtype=torch.uint8)
    frames[1, :, 20:30, 40:50] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)  # a red square ...
    labels[1, 20:30, 40:50] = RED_CUBE
    frames[1, :, 20:30, 50:56] = torch.tensor([0.1, 0.1, 0.9]).view(3, 1, 1)  # ... touching a blue one
    labels[1, 20:30, 50:56] = BLUE_CYLINDER
    stored = crop_objects(frames, labels, [(1, RED_CUBE), (1, BLUE_CYLINDER)])
    assert stored.shape == (2, 4, STORE_SIZE, STORE_SIZE) and stored.dtype == torch.float32
    centre = STORE_SIZE // 2
    assert stored[0, :3, centre, centre].tolist() == pytest.approx([0.9, 0.1, 0.1], abs=1e-5)
    assert stored[0, 3, centre, centre] == pytest.approx(1.0)
    # The object fills 1/STORE_MARGIN of the crop's side; the touching blue square is in RGB but not in the mask.
    side = (stored[0, 3, centre] > 0.5).sum().item()
    assert side == pytest.approx(STORE_SIZE / STORE_MARGIN, abs=2)
    assert stored[0, 2].max() > 0.8 and stored[0, 3][stored[0, 2] > 0.8].max() < 0.5
    views = view_crops(stored)
    assert views.shape == (2, 4, VIEW_SIZE, VIEW_SIZE)
    assert crop_objects(frames, labels, []).shape == (0, 4, STORE_SIZE, STORE_SIZE)


def test_augmented_views_keep_range_and_shape_and_differ_per_draw():
    stored = torch.rand(6, 4, STORE_SIZE, STORE_SIZE)
    augment = {"brightness": 0.2, "contrast": 0.2, "noise": 0.02, "scale_jitter": 0.15, "shift_jitter": 0.1}
    torch.manual_seed(0)
    first = augment_crops(stored, augment)
    second = augment_crops(stored, augment)
    assert first.shape == (6, 4, VIEW_SIZE, VIEW_SIZE)
    assert first.min() >= 0 and first.max() <= 1 and not torch.equal(first, second)
    assert set(first[:, 3].unique().tolist()) <= {0.0, 1.0}  # jittered masks are binary


def test_class_log_probs_normalise_over_the_48_classes_and_compose_the_factors():
    torch.manual_seed(0)
    net = ObjectClassifier(channels=(8, 16)).eval()
    logits = net(torch.rand(5, 4, VIEW_SIZE, VIEW_SIZE))
    assert {name: tuple(t.shape) for name, t in logits.items()} == {"shape": (5, 3), "material": (5, 2),
                                                                      "colour": (5, 8)}
    log_p = class_log_probs(logits, class_factor_table())
    assert log_p.shape == (5, NUM_CLASSES - 1)
    assert torch.allclose(log_p.logsumexp(1), torch.zeros(5), atol=1e-5)
    shape, material, colour = class_indices(RED_SPHERE)
    expected = sum(logits[name].log_softmax(1)[2, index]
                   for name, index in (("shape", shape), ("material", material), ("colour", colour)))
    assert log_p[2, RED_SPHERE - 1].item() == pytest.approx(expected.item(), abs=1e-5)
    with pytest.raises(ValueError, match="crops"):
        net(torch.rand(2, 3, VIEW_SIZE, VIEW_SIZE))
    # A factor left out has no say: classes differing only in material score alike, and the rest still normalise.
    no_material = class_log_probs(logits, class_factor_table(), factors=("shape", "colour"))
    assert torch.allclose(no_material.logsumexp(1), torch.zeros(5), atol=1e-5)
    metal = class_id("sphere", "metal", "red")
    assert torch.allclose(no_material[:, RED_SPHERE - 1], no_material[:, metal - 1])
    with pytest.raises(ValueError, match="unknown factors"):
        class_log_probs(logits, class_factor_table(), factors=("size",))


def test_the_object_opinion_overrules_a_segmenter_that_names_the_wrong_shape():
    """A red object the segmenter calls a cube over 3 frames, which the object judge calls a sphere."""
    scores = torch.full((3, NUM_CLASSES, 24, 32), -10.0)
    scores[:, 0] = 0.0
    for frame in range(3):
        scores[frame, 0, 6:14, 4 + frame:12 + frame] = -10.0
        scores[frame, RED_CUBE, 6:14, 4 + frame:12 + frame] = -0.2
        scores[frame, RED_SPHERE, 6:14, 4 + frame:12 + frame] = -1.0
    calls = []

    def judge(labels):
        calls.append([int(frame.max()) for frame in labels])
        opinion = np.full((1, NUM_CLASSES - 1), -20.0)
        opinion[0, RED_SPHERE - 1] = -0.05
        return [opinion.copy() for _ in labels]

    assert instance_vote(scores).unique().tolist() == [0, RED_CUBE]
    voted = instance_vote(scores, object_scores=judge, segmenter_weight=1.0)
    assert calls == [[1, 1, 1]]  # one opinion per component of each frame
    for frame in range(3):
        assert voted[frame, 6:14, 4 + frame:12 + frame].unique().tolist() == [RED_SPHERE]
    assert voted.unique().tolist() == [0, RED_SPHERE]
    # A segmenter weighted far above the judge keeps its own answer.
    assert instance_vote(scores, object_scores=judge, segmenter_weight=100.0).unique().tolist() == [0, RED_CUBE]


def _objects_args(data: Path, results: Path, *mods: str) -> list[str]:
    return ["--exp", "objects", "--data", "CLEVRER", "--data_path", str(data), "--results_dir", str(results),
            "--config_mod", "model.channels=[8,16]", "train.batch_size=16", "train.log_every=2", "train.val_every=2",
            "train.ckpt_every=2", *mods]


@pytest.fixture(scope="module")
def objects_run(synthetic_clevrer, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    assert main.main(_objects_args(synthetic_clevrer, results, "train.max_steps=4")) == 0
    return results / "objects_main_CLEVRER_42"


def test_objects_run_validates_keeps_the_best_and_resumes_with_its_step(synthetic_clevrer, objects_run):
    val = [r for r in read_stats(objects_run) if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4]
    assert all(0.0 <= r[key] <= 1.0 for r in val for key in ("accuracy", "shape", "material", "colour"))
    best = load_checkpoint(objects_run / "model_best.pth")
    assert best["val_accuracy"] == pytest.approx(max(r["accuracy"] for r in val))
    assert main.main(_objects_args(synthetic_clevrer, objects_run.parent, "train.max_steps=6")) == 0
    assert load_checkpoint(objects_run / "model_last.pth")["step"] == 6
    assert [r["step"] for r in read_stats(objects_run) if r["split"] == "train"] == [2, 4, 6]
    model = load_object_classifier(objects_run / "model_best.pth")
    assert not model.training
    crops = ObjectCrops(synthetic_clevrer, ["val"])
    assert len(crops) > 0 and crops.crops.dtype == torch.uint8
    assert factor_accuracy(model, crops, torch.device("cpu"))["accuracy"] == pytest.approx(
        best["val_accuracy"], abs=1e-6)


def test_a_segmenter_checkpoint_is_refused_as_object_classifier(tmp_path):
    from tools.core.checkpoint import save_checkpoint
    from tools.core.errors import UserError

    save_checkpoint({"model": {}, "step": 1, "config": {"model": {"arch": "unet", "encoder": "resnet18"}}},
                    tmp_path / "m.pth")
    with pytest.raises(UserError, match="not an object classifier"):
        load_object_classifier(tmp_path / "m.pth")
