"""Tiny CPU runs of `--exp ddpm` in latent and pixel mode: complete, resume, refuse a mismatched first stage."""
import pytest
import torch

import main
from tests.conftest import make_first_stage_checkpoint as _first_stage_checkpoint
from tests.conftest import run_ddpm as _ddpm
from tools.core.checkpoint import load_checkpoint, save_checkpoint
from tools.core.logger import read_stats
from tools.predict.video_predictor import VideoPredictor


@pytest.mark.parametrize("mode", ["latent", "pixel"])
def test_ddpm_runs_and_resumes(mode, synthetic_clevrer, tmp_path):
    first = _first_stage_checkpoint(tmp_path / "fs.pth") if mode == "latent" else "none"
    assert _ddpm(synthetic_clevrer, tmp_path, mode, first, 2) == 0
    assert _ddpm(synthetic_clevrer, tmp_path, mode, first, 3) == 0
    run_dir = tmp_path / f"ddpm_{mode}_CLEVRER_42"
    state = load_checkpoint(run_dir / "model_last.pth")
    assert state["step"] == 3 and state["scales"]["motion"] > 0
    train_steps = [r["step"] for r in read_stats(run_dir) if r["split"] == "train"]
    assert train_steps == [1, 2, 3]
    assert all(r["loss"] > 0 for r in read_stats(run_dir) if r["split"] == "train")

    predictor = VideoPredictor.from_checkpoint(str(run_dir / "model_last.pth"), torch.device("cpu"))
    observed = torch.rand(1, 11, 3, 32, 48) * 2 - 1
    rgb, logits = predictor.predict(observed, [21], n_samples=2, generator=torch.Generator().manual_seed(0))
    assert rgb.shape == (1, 2, 1, 3, 32, 48)
    assert (logits is None) == (mode == "pixel")
    again, _ = predictor.predict(observed, [21], n_samples=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rgb, again), "DDIM eta=0 sampling must be deterministic per seed"


def test_mismatched_first_stage_refused(synthetic_clevrer, tmp_path, capsys):
    first = _first_stage_checkpoint(tmp_path / "fs64.pth", height=64, width=96)
    assert _ddpm(synthetic_clevrer, tmp_path, "bad", first, 1) == main.EXIT_USER_ERROR
    message = capsys.readouterr().err
    assert "fs64.pth" in message and "data.height=64" in message


def test_first_model_of_another_stage_refused(synthetic_clevrer, tmp_path, capsys):
    save_checkpoint({"model": {}, "step": 1, "config": {"model": {}, "run": {"exp": "segment"}}}, tmp_path / "s.pth")
    assert _ddpm(synthetic_clevrer, tmp_path, "bad2", tmp_path / "s.pth", 1) == main.EXIT_USER_ERROR
    assert "not a first-stage checkpoint" in capsys.readouterr().err
