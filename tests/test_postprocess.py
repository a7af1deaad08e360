"""Class suppression removes exactly the absent classes; majority vote picks the per-pixel mode."""
import torch

from tools.predict.postprocess import majority_vote, present_classes, suppress_absent_logits, suppress_absent_mask


def test_present_classes_and_mask_suppression_remove_exactly_absent():
    observed = torch.zeros(3, 4, 4, dtype=torch.uint8)
    observed[0, 0, 0] = 5
    observed[2, 1, 1] = 17
    allowed = present_classes(observed)
    assert allowed.nonzero().flatten().tolist() == [0, 5, 17]
    pred = torch.tensor([[5, 17, 30], [48, 0, 5]], dtype=torch.uint8)
    out = suppress_absent_mask(pred, allowed)
    assert out.tolist() == [[5, 17, 0], [0, 0, 5]] and out.dtype == torch.uint8


def test_min_pixels_ignores_specks():
    observed = torch.zeros(2, 4, 4, dtype=torch.uint8)
    observed[0, :2, :2] = 3  # 4 pixels
    observed[1, 0, 0] = 9  # 1 pixel
    assert present_classes(observed, min_pixels=2).nonzero().flatten().tolist() == [0, 3]


def test_logit_suppression_falls_back_to_next_best_allowed_class():
    logits = torch.zeros(49, 1, 2)
    logits[30, 0, 0], logits[5, 0, 0] = 3.0, 2.0  # best is absent class 30, next best present class 5
    logits[0, 0, 1] = 1.0
    allowed = torch.zeros(49, dtype=torch.bool)
    allowed[[0, 5]] = True
    assert suppress_absent_logits(logits, allowed).argmax(0).tolist() == [[5, 0]]


def test_majority_vote():
    samples = torch.tensor([[[1, 2]], [[1, 3]], [[4, 3]]], dtype=torch.uint8)
    assert majority_vote(samples).tolist() == [[1, 3]]
