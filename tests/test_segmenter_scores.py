"""evals/segmenter_scores.factor_scores: the per-frame errors split into objectness, shape, material and colour."""
import math

import torch

from evals.scoring.segmenter_scores import factor_scores
from tools.data.classes import class_id


def test_factor_scores_count_each_factor_on_pixels_both_call_objects():
    truth = torch.zeros(1, 2, 4, dtype=torch.uint8)
    truth[0, 0, :] = class_id("cube", "rubber", "red")
    predicted = truth.clone()
    predicted[0, 0, 0] = class_id("cube", "metal", "red")      # material wrong
    predicted[0, 0, 1] = class_id("sphere", "rubber", "blue")  # shape and colour wrong
    predicted[0, 0, 3] = 0                                     # missed: objectness only
    predicted[0, 1, 0] = class_id("cube", "rubber", "red")     # background called an object
    scores = factor_scores(predicted, truth)
    assert math.isclose(scores["objectness_iou"], 3 / 5)
    assert math.isclose(scores["material_accuracy"], 2 / 3)
    assert math.isclose(scores["shape_accuracy"], 2 / 3)
    assert math.isclose(scores["colour_accuracy"], 2 / 3)


def test_factor_scores_without_objects_are_nan():
    empty = torch.zeros(1, 2, 2, dtype=torch.uint8)
    assert all(math.isnan(v) for v in factor_scores(empty, empty).values())
