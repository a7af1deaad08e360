"""`--exp eval` on crafted predictions folders: perfect and shifted submissions, image metrics, FVD, refusals."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main
from evals.scoring.predictions_folder import load_predictions
from tools.data.clevrer import read_frames, resize_frames


def write_predictions(folder: Path, submission: torch.Tensor, video_ids: list[int], split: str = "val",
                      frames: torch.Tensor | None = None, targets: tuple[int, ...] = (21,)) -> Path:
    """A predictions folder laid out as `--exp predict` writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(submission, folder / "submission.pt")
    (folder / "video_ids.json").write_text(json.dumps({"split": split, "video_ids": video_ids}))
    meta = {"targets": list(targets), "strategy": "direct", "n_samples": 1, "sec_per_video": 0.5,
            "peak_mem_gib": None, "ddpm_checkpoint": "none", "segmenter_checkpoint": None}
    (folder / "meta.json").write_text(json.dumps(meta))
    if frames is not None:
        torch.save(frames, folder / "frames.pt")
    return folder


def true_masks(root: Path, split: str, ids: list[int], frame: int = 21) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.load(root / split / f"video_{i}" / "mask.npy")[frame]) for i in ids])


def true_frames_uint8(root: Path, split: str, ids: list[int], indices: list[int], size) -> torch.Tensor:
    videos = [resize_frames(read_frames(root / split / f"video_{i}", indices), size) for i in ids]
    return (torch.stack(videos) * 255).round().to(torch.uint8)


def run_eval(data: Path, results: Path, predictions: Path, *mods: str, run_id: str = "t") -> int:
    return main.main(["--exp", "eval", "--id", run_id, "--data_path", str(data), "--results_dir", str(results),
                      "--device", "cpu", "--config_mod", f"eval.predictions={predictions}", *mods])


def read_report(results: Path, run_id: str = "t") -> dict:
    return json.loads((results / f"eval_{run_id}_CLEVRER_42" / "eval.json").read_text())


def test_perfect_submission_scores_one_with_identical_frames(synthetic_clevrer, tmp_path, capsys):
    ids = [3, 4]
    frames = true_frames_uint8(synthetic_clevrer, "val", ids, [21], (80, 120))
    folder = write_predictions(tmp_path / "pred", true_masks(synthetic_clevrer, "val", ids), ids, frames=frames)
    assert run_eval(synthetic_clevrer, tmp_path, folder, "eval.metrics=[jaccard,lpips,psnr_ssim]") == 0
    report = read_report(tmp_path)
    assert report["jaccard"]["score"] == pytest.approx(1.0)
    assert report["jaccard"]["mean_over_videos"] == pytest.approx(1.0)
    assert report["frame22"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert report["frame22"]["ssim"] == pytest.approx(1.0, abs=1e-9) and report["frame22"]["psnr"] >= 99
    assert report["frame22"]["resolution"] == [80, 120]
    assert 0 < report["baselines"]["copy_frame11_truth"] < 1
    markdown = (tmp_path / "eval_t_CLEVRER_42" / "eval.md").read_text()
    assert "| frame-22 Jaccard (competition, all masks stacked) | 1.0000 |" in markdown
    assert "copy frame 11 (true masks)" in markdown and markdown in capsys.readouterr().out


def _one_square_dataset(root: Path) -> Path:
    """One val video: a grey floor, and in frame 22 a 20x20 square of class 5 at rows 40-59, columns 100-119."""
    folder = root / "val" / "video_7"
    folder.mkdir(parents=True)
    for t in range(22):
        Image.fromarray(np.full((160, 240, 3), 90, np.uint8)).save(folder / f"image_{t}.png")
    masks = np.zeros((22, 160, 240), np.uint8)
    masks[:, 40:60, 100:120] = 5
    np.save(folder / "mask.npy", masks)
    return root


def test_shifted_submission_scores_the_hand_computed_value(tmp_path):
    data = _one_square_dataset(tmp_path / "data")
    shifted = torch.zeros(1, 160, 240, dtype=torch.uint8)
    shifted[0, 40:60, 110:130] = 5  # 10 pixels to the right: half the square overlaps
    folder = write_predictions(tmp_path / "pred", shifted, [7])
    assert run_eval(data, tmp_path, folder) == 0
    square_iou = (20 * 10) / (20 * 30)
    background_iou = (160 * 240 - 600) / (160 * 240 - 200)
    report = read_report(tmp_path)
    assert report["jaccard"]["score"] == pytest.approx((square_iou + background_iou) / 2, abs=1e-6)
    assert report["jaccard"]["worst_classes"][0] == ["brown metal cube", pytest.approx(square_iou)]
    assert any("no LPIPS" in note for note in report["notes"])  # no frames.pt written


def test_fvd_of_true_frames_is_near_zero_and_cached(synthetic_clevrer, tmp_path):
    ids, targets = [3, 4], list(range(11, 22))
    frames = true_frames_uint8(synthetic_clevrer, "val", ids, targets, (32, 48))
    folder = write_predictions(tmp_path / "pred", true_masks(synthetic_clevrer, "val", ids), ids,
                               frames=frames, targets=tuple(targets))
    assert run_eval(synthetic_clevrer, tmp_path, folder, "eval.metrics=[fvd]", "eval.baselines=false") == 0
    report = read_report(tmp_path)
    assert report["fvd"]["frames"] == list(range(12, 23)) and report["fvd"]["num_videos"] == 2
    assert abs(report["fvd"]["fvd"]) < 1e-2
    assert len(list((tmp_path / "fvd_cache").glob("val_2v_11f_32x48_*.npz"))) == 1


def test_mismatched_submission_shape_refused(synthetic_clevrer, tmp_path, capsys):
    folder = write_predictions(tmp_path / "pred", torch.zeros(2, 80, 120, dtype=torch.uint8), [3, 4])
    assert run_eval(synthetic_clevrer, tmp_path, folder) == main.EXIT_USER_ERROR
    message = capsys.readouterr().err
    assert "submission.pt" in message and "(2, 80, 120)" in message and "(2, 160, 240)" in message


@pytest.mark.parametrize("problem, expected", [
    ("missing_folder", "does not exist"),
    ("missing_submission", "submission.pt is missing"),
    ("wrong_dtype", "expected uint8 masks"),
    ("ids_mismatch", "lists 1 videos"),
    ("unknown_video", "videos [99]"),
    ("split_conflict", "eval.split=train"),
    ("frames_shape", "frames.pt: expected uint8 [2, 1, 3, h, w]"),
])
def test_bad_predictions_refused_with_clear_message(problem, expected, synthetic_clevrer, tmp_path, capsys):
    masks = torch.zeros(2, 160, 240, dtype=torch.uint8)
    folder, mods = tmp_path / "pred", []
    if problem != "missing_folder":
        write_predictions(folder, masks.float() if problem == "wrong_dtype" else masks,
                          {"ids_mismatch": [3], "unknown_video": [3, 99]}.get(problem, [3, 4]),
                          frames=torch.zeros(2, 2, 3, 8, 8, dtype=torch.uint8) if problem == "frames_shape" else None)
    if problem == "missing_submission":
        (folder / "submission.pt").unlink()
    if problem == "split_conflict":
        mods = ["eval.split=train"]
    assert run_eval(synthetic_clevrer, tmp_path, folder, *mods) == main.EXIT_USER_ERROR
    assert expected in capsys.readouterr().err


def test_load_predictions_reads_what_predict_writes(tmp_path):
    frames = torch.randint(0, 255, (2, 1, 3, 16, 24), dtype=torch.uint8)
    folder = write_predictions(tmp_path / "p", torch.ones(2, 160, 240, dtype=torch.uint8), [5, 6], "hidden", frames)
    predictions = load_predictions(folder)
    assert predictions.video_ids == [5, 6] and predictions.split == "hidden" and predictions.targets == [21]
    assert torch.equal(predictions.frames, frames)
