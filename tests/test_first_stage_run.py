"""Tiny CPU runs of `--exp first_stage` and its GAN finetune: complete, resume, log scalars and images."""
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main
from tools.core.checkpoint import load_checkpoint
from tools.core.logger import read_stats

SMALL = ["data.height=32", "data.width=48", "model.channels=8", "train.log_every=1", "train.image_every=2",
         "train.ckpt_every=2", "train.val_every=2", "loss.lpips_frames=1"]


def _first_stage(data, results, run_id, steps, *extra, mods=()):
    return main.main(["--exp", "first_stage", "--id", run_id, "--pretrain_config", "configs/autoencoder/tiny.yaml",
                      "--data_path", str(data), "--results_dir", str(results), "--batch_size", "1",
                      *extra, "--config_mod", f"train.max_steps={steps}", *SMALL, *mods])


def _events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def first_stage_run(synthetic_clevrer, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    assert _first_stage(synthetic_clevrer, results, "main", 2) == 0
    assert _first_stage(synthetic_clevrer, results, "main", 4) == 0  # same command, more steps: resumes
    return results / "first_stage_main_CLEVRER_42"


def test_first_stage_completes_resumes_and_logs(first_stage_run):
    state = load_checkpoint(first_stage_run / "model_last.pth")
    assert state["step"] == 4 and {"model", "ema", "optimizer", "rng", "config"} <= set(state)
    train_steps = [r["step"] for r in read_stats(first_stage_run) if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4], "the resumed run must continue at step 3, not restart"
    tags = _events(first_stage_run).Tags()
    for scalar in ["train/l1", "train/lpips", "train/ce", "train/psnr", "train/mask_iou", "val/recon_psnr"]:
        assert scalar in tags["scalars"]
    assert "first_stage/reconstruction" in tags["images"]


def test_gan_finetune_starts_from_first_stage_folder(first_stage_run, synthetic_clevrer, capsys):
    results = first_stage_run.parent
    code = _first_stage(synthetic_clevrer, results, "main_gan", 2, "--first_stage_folder", str(first_stage_run),
                        mods=["loss.gan.enabled=true", "loss.gan.channels=8"])
    assert code == 0
    assert "starting from" in capsys.readouterr().out
    run_dir = results / "first_stage_main_gan_CLEVRER_42"
    records = [r for r in read_stats(run_dir) if r["split"] == "train"]
    assert records and all(r["d_loss"] > 0 for r in records), "discriminator must train from step 0"
    assert "train/d_loss" in _events(run_dir).Tags()["scalars"]
    code = _first_stage(synthetic_clevrer, results, "main_gan", 3, "--first_stage_folder", str(first_stage_run),
                        mods=["loss.gan.enabled=true", "loss.gan.channels=8"])
    assert code == 0
    assert [r["step"] for r in read_stats(run_dir) if r["split"] == "train"] == [1, 2, 3], "the GAN run resumes"
    assert "discriminator" in load_checkpoint(run_dir / "model_last.pth")


def test_missing_first_stage_folder_is_refused(synthetic_clevrer, tmp_path, capsys):
    code = _first_stage(synthetic_clevrer, tmp_path, "gan", 1, "--first_stage_folder", str(tmp_path / "nope"))
    assert code == main.EXIT_USER_ERROR
    assert "holds no model_last.pth" in capsys.readouterr().err


def test_missing_or_empty_unlabeled_split_is_skipped(synthetic_clevrer, tmp_path):
    from omegaconf import OmegaConf

    from tools.data.datasets import training_clips

    cfg = OmegaConf.load("configs/autoencoder/tiny.yaml")
    cfg.run = {"data": "CLEVRER", "data_path": str(tmp_path)}
    for split in ("train", "val"):
        (tmp_path / split).symlink_to(synthetic_clevrer / split)
    (tmp_path / "unlabeled").mkdir()  # what the generator leaves for counts.unlabeled=0
    assert len(training_clips(cfg)) == 3
