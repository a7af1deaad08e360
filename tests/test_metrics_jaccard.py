"""Competition Jaccard against a hand-computed value, plus per-class and per-video views."""
import pytest
import torch
from torchmetrics.functional.classification import multiclass_jaccard_index

from evals.metrics.jaccard import NUM_CLASSES, jaccard_report, jaccard_score, per_class_iou, per_video_jaccard
from tools.core.errors import UserError

# Two 2x3 videos.
# Video 1: true [[0,0,1],[0,2,2]], pred [[0,1,1],[0,2,0]]
#   class 0: true 3 px, pred 3 px, both at (0,0),(1,0) -> 2 / (3+3-2) = 0.5
#   class 1: true {(0,2)}, pred {(0,1),(0,2)}           -> 1 / 2 = 0.5
#   class 2: true {(1,1),(1,2)}, pred {(1,1)}           -> 1 / 2 = 0.5     video score 0.5
# Video 2: true [[3,3,3],[0,0,0]], pred [[3,3,0],[0,0,0]]
#   class 0: true 3, pred 4, both 3 -> 3/4;  class 3: true 3, pred 2, both 2 -> 2/3
#   video score (3/4 + 2/3) / 2 = 17/24
# All masks stacked (the competition score):
#   class 0: true 6, pred 7, both 5 -> 5/8; class 1: 1/2; class 2: 1/2; class 3: 2/3
#   torchmetrics gives classes 4..48 (in neither pred nor true) zero weight, so the score is
#   (5/8 + 1/2 + 1/2 + 2/3) / 4 = 55/96 = 0.572917 (it would be 55/24/49 = 0.0468 if they counted).
TRUE = torch.tensor([[[0, 0, 1], [0, 2, 2]], [[3, 3, 3], [0, 0, 0]]], dtype=torch.uint8)
PRED = torch.tensor([[[0, 1, 1], [0, 2, 0]], [[3, 3, 0], [0, 0, 0]]], dtype=torch.uint8)


def test_score_matches_hand_computed_value():
    assert jaccard_score(PRED, TRUE) == pytest.approx(55 / 96, abs=1e-6)
    assert jaccard_score(PRED, TRUE, batch_size=1) == pytest.approx(55 / 96, abs=1e-6)


def test_per_class_and_per_video_match_hand_computed_values():
    iou = per_class_iou(PRED, TRUE, batch_size=1)
    assert iou.shape == (NUM_CLASSES,)
    assert iou[:4] == pytest.approx([5 / 8, 1 / 2, 1 / 2, 2 / 3])
    assert all(v != v for v in iou[4:])  # NaN: absent from both
    assert per_video_jaccard(PRED, TRUE) == pytest.approx([0.5, 17 / 24])
    report = jaccard_report(PRED, TRUE)
    assert report.score == pytest.approx(55 / 96, abs=1e-6)
    assert report.mean_over_videos == pytest.approx((0.5 + 17 / 24) / 2)
    assert report.lines()[-1].endswith("0.5729")


def test_false_positive_class_counts_with_zero_iou():
    pred = PRED.clone()
    pred[0, 0, 0] = 7  # class 7 appears only in the prediction: IoU 0, and it now has weight
    # class 0 loses one intersection pixel and one predicted pixel: 4 / (6 + 6 - 4) = 1/2
    expected = (1 / 2 + 1 / 2 + 1 / 2 + 2 / 3 + 0) / 5
    assert jaccard_score(pred, TRUE) == pytest.approx(expected, abs=1e-6)


def test_per_video_agrees_with_torchmetrics_on_random_masks():
    generator = torch.Generator().manual_seed(0)
    true = torch.randint(0, 6, (4, 16, 24), generator=generator, dtype=torch.uint8)
    pred = torch.where(torch.rand(4, 16, 24, generator=generator) < 0.7, true,
                       torch.randint(0, 8, (4, 16, 24), generator=generator, dtype=torch.uint8))
    ours = per_video_jaccard(pred, true, batch_size=3)
    reference = [float(multiclass_jaccard_index(p.long(), t.long(), num_classes=NUM_CLASSES))
                 for p, t in zip(pred, true)]
    assert ours == pytest.approx(reference, abs=1e-6)
    stacked = float(multiclass_jaccard_index(pred.long(), true.long(), num_classes=NUM_CLASSES))
    assert jaccard_score(pred, true, batch_size=3) == pytest.approx(stacked, abs=1e-6)


def test_bad_masks_are_user_errors():
    with pytest.raises(UserError, match="one shape"):
        jaccard_score(PRED[:1], TRUE)
    with pytest.raises(UserError, match="0..48"):
        jaccard_score(PRED + 49, TRUE)
    with pytest.raises(UserError, match="dtype"):
        jaccard_score(PRED.float(), TRUE)


def test_script_scores_against_tensor_and_dataset_split(tmp_path, capsys):
    import numpy as np

    from evals import eval_jaccard

    split = tmp_path / "data" / "val"
    full_true = torch.zeros(2, 22, 2, 3, dtype=torch.uint8)
    full_true[:, 21] = TRUE
    for index in (10, 9):  # natural order puts video_9 before video_10
        (split / f"video_{index}").mkdir(parents=True)
        np.save(split / f"video_{index}" / "mask.npy", full_true[0 if index == 9 else 1].numpy())
    torch.save(PRED, tmp_path / "submission.pt")
    torch.save(TRUE, tmp_path / "true.pt")
    for true in (tmp_path / "true.pt", tmp_path / "data"):
        assert eval_jaccard.main([str(tmp_path / "submission.pt"), "--true", str(true)]) == 0
        assert float(capsys.readouterr().out.splitlines()[-1]) == pytest.approx(55 / 96, abs=1e-6)
    torch.save(PRED[:1], tmp_path / "short.pt")
    assert eval_jaccard.main([str(tmp_path / "short.pt"), "--true", str(tmp_path / "true.pt")]) == 2
    assert "1 masks" in capsys.readouterr().err
