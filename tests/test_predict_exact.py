"""`--exp predict` exactly: each video's result is a function of (seed, video id) alone, so a resumed run, a
one-video run and an uninterrupted run agree bit for bit; row i of the submission is video i; classes absent
from the observed frames are suppressed; a re-run with other inputs is refused."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from tests.conftest import write_synthetic_videos
from tools.data.clevrer import ClevrerDataset
from tools.predict.postprocess import present_classes
from tools.predict.grid_route import MaskScorer
from tools.predict.video_predictor import VideoPredictor

IDS = [9, 10, 100]  # natural order 9, 10, 100; text order 10, 100, 9
MIN_PIXELS = 2000  # few classes count as observed for the untrained head, so suppression has work to do


@pytest.fixture(scope="module")
def hidden_ids(tmp_path_factory) -> Path:
    return write_synthetic_videos(tmp_path_factory.mktemp("ids"), "hidden", IDS, np.random.default_rng(1))


def _predict(data, results, run_id, ddpm, *mods, flags=()):
    return main.main(["--exp", "predict", "--id", run_id, "--data_path", str(data), "--results_dir", str(results),
                      *flags, "--config_mod", f"predict.ddpm={ddpm}", "predict.split=hidden", "predict.n_samples=2",
                      "predict.fusion=head", "predict.png_videos=0", "predict.gif_videos=0", "predict.batch_size=2",
                      f"predict.min_observed_pixels={MIN_PIXELS}", *mods])


def _outputs(results: Path, run_id: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    out = results / f"predict_{run_id}_CLEVRER_42"
    ids = json.loads((out / "video_ids.json").read_text())["video_ids"]
    return torch.load(out / "submission.pt"), torch.load(out / "frames.pt"), ids


@pytest.fixture(scope="module")
def straight(tiny_ddpm_checkpoint, hidden_ids, tmp_path_factory):
    results = tmp_path_factory.mktemp("straight")
    assert _predict(hidden_ids, results, "straight", tiny_ddpm_checkpoint) == 0
    return _outputs(results, "straight")


def test_resumed_prediction_equals_uninterrupted(straight, tiny_ddpm_checkpoint, hidden_ids, tmp_path):
    assert _predict(hidden_ids, tmp_path, "split", tiny_ddpm_checkpoint, "predict.max_videos=1") == 0
    assert _predict(hidden_ids, tmp_path, "split", tiny_ddpm_checkpoint) == 0
    submission, frames, ids = _outputs(tmp_path, "split")
    assert ids == IDS == straight[2]
    assert torch.equal(submission, straight[0]) and torch.equal(frames, straight[1])


def test_row_i_of_the_submission_is_video_i(straight, tiny_ddpm_checkpoint, hidden_ids, tmp_path):
    submission, frames, _ = straight
    assert len({bytes(row.numpy()) for row in submission}) == len(IDS), "rows must differ to tell videos apart"
    for row, video_id in enumerate(IDS):
        alone = tmp_path / f"alone_{video_id}"
        shutil.copytree(hidden_ids / "hidden" / f"video_{video_id}", alone / "hidden" / f"video_{video_id}")
        assert _predict(alone, tmp_path, f"v{video_id}", tiny_ddpm_checkpoint) == 0
        one_mask, one_frames, one_ids = _outputs(tmp_path, f"v{video_id}")
        assert one_ids == [video_id]
        assert torch.equal(one_mask[0], submission[row]), f"row {row} is not video {video_id}"
        assert torch.equal(one_frames[0], frames[row])


def test_classes_absent_from_observed_frames_are_suppressed(straight, tiny_ddpm_checkpoint, hidden_ids):
    predictor = VideoPredictor.from_checkpoint(str(tiny_ddpm_checkpoint), torch.device("cpu"))
    scorer = MaskScorer(predictor, None, "head", False)
    dataset = ClevrerDataset(hidden_ids, "hidden")
    for row in range(len(IDS)):
        allowed = present_classes(scorer.observed_masks(dataset[row]["frames"]), MIN_PIXELS)
        assert 1 < int(allowed.sum()) < 49, "the test needs some classes suppressed and some kept"
        predicted = set(torch.unique(straight[0][row]).tolist())
        assert predicted <= set(torch.nonzero(allowed).flatten().tolist())


def test_other_inputs_refused_and_fresh_redoes(tiny_ddpm_checkpoint, hidden_ids, tmp_path, capsys):
    assert _predict(hidden_ids, tmp_path, "r", tiny_ddpm_checkpoint, "predict.max_videos=1") == 0
    out = tmp_path / "predict_r_CLEVRER_42"
    before = sorted(p.name for p in out.iterdir())
    for change in ("predict.strategy=skip", "predict.segmenter=other.pth", "predict.n_samples=3"):
        capsys.readouterr()
        assert _predict(hidden_ids, tmp_path, "r", tiny_ddpm_checkpoint, change) == main.EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and change.split("=")[0].split(".")[1] in err and "--fresh" in err
    copy = tmp_path / "other.pth"
    shutil.copy(tiny_ddpm_checkpoint, copy)
    assert _predict(hidden_ids, tmp_path, "r", copy) == main.EXIT_USER_ERROR, "another predict.ddpm"
    assert sorted(p.name for p in out.iterdir()) == before, "a refused run changes nothing"
    assert _predict(hidden_ids, tmp_path, "r", tiny_ddpm_checkpoint, "predict.max_videos=1",
                    "predict.strategy=skip", flags=["--fresh"]) == 0
    assert len(list(tmp_path.glob("predict_r_CLEVRER_42.old-*"))) == 1
    recorded = json.loads((out / "inputs.json").read_text())
    assert recorded["strategy"] == "skip" and recorded["ddpm"] == str(Path(tiny_ddpm_checkpoint).resolve())
