"""A resumed run equals an uninterrupted one bit for bit: weights, EMA, optimizer, scaler and RNG state of the
ddpm, first_stage and segment stages, with validation and checkpoint steps that do not line up (validation
every 2 steps, checkpoints every 3, the first run stopping at step 3 and validating there as its last step).
Also: temp leftovers of a kill are removed, stats.jsonl keeps each step once, a data error saves first."""
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import main
from tests.conftest import TINY_DDPM, make_first_stage_checkpoint
from tests.test_train_loop import CPU, ToyTask, _cfg, _dataset
from tools.core.checkpoint import load_checkpoint
from tools.core.errors import UserError
from tools.core.logger import RunLogger, read_stats
from tools.core.runs import LAST_CHECKPOINT, prepare_run_dir
from tools.data.loader import ResumableSampler, make_train_loader
from tools.train.loop import seed_everything, train, worker_error_message

UNALIGNED = ["train.log_every=1", "train.ckpt_every=3"]


def assert_bitwise_equal(a: Any, b: Any, where: str = "state") -> None:
    """Nested dicts/lists/tensors equal exactly (tensors by torch.equal, dtype included)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training_state(straight: Path, resumed: Path) -> None:
    one, two = load_checkpoint(straight / LAST_CHECKPOINT), load_checkpoint(resumed / LAST_CHECKPOINT)
    # Run names differ and wall time is not training's product; the content compared is what training produced.
    for key in ("config", "first_stage", "trained_seconds"):
        one.pop(key, None), two.pop(key, None)
    assert_bitwise_equal(one, two)
    steps = lambda run: [(r["step"], r["split"]) for r in read_stats(run) if r["split"] == "train"]  # noqa: E731
    assert steps(resumed) == steps(straight), "every step logged once"


def _straight_and_split(run, total: int, first: int) -> tuple[Path, Path]:
    """Run `total` steps straight, and `first` steps then a resume to `total`; both run folders."""
    straight = run("straight", total)
    split = run("split", first)
    torch.manual_seed(987)  # the resumed process starts from unrelated RNG state
    np.random.seed(987)
    assert run("split", total) == split
    return straight, split


def test_ddpm_resume_is_exact(synthetic_clevrer, tmp_path):
    first = make_first_stage_checkpoint(tmp_path / "fs.pth")

    def run(run_id: str, steps: int) -> Path:
        code = main.main(["--exp", "ddpm", "--id", run_id, "--pretrain_config", "configs/latent-diffusion/tiny.yaml",
                          "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path), "--first_model",
                          str(first), "--batch_size", "2", "--config_mod", f"train.max_steps={steps}", *TINY_DDPM,
                          *UNALIGNED, "frames.prob_mask_cond=0.5"])
        assert code == 0
        return tmp_path / f"ddpm_{run_id}_CLEVRER_42"

    straight, split = _straight_and_split(run, 5, 3)
    assert [r["step"] for r in read_stats(split) if r["split"] == "val"] == [2, 3, 4, 5]
    assert_same_training_state(straight, split)


def test_first_stage_resume_is_exact(synthetic_clevrer, tmp_path):
    def run(run_id: str, steps: int) -> Path:
        code = main.main(["--exp", "first_stage", "--id", run_id, "--pretrain_config", "configs/autoencoder/tiny.yaml",
                          "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path), "--batch_size", "1",
                          "--config_mod", f"train.max_steps={steps}", "data.height=32", "data.width=48",
                          "model.channels=8", "train.val_every=2", "train.image_every=2", "train.val_clips=1",
                          "loss.lpips_frames=1", *UNALIGNED])
        assert code == 0
        return tmp_path / f"first_stage_{run_id}_CLEVRER_42"

    straight, split = _straight_and_split(run, 5, 3)
    assert_same_training_state(straight, split)


def test_segment_resume_is_exact(synthetic_clevrer, tmp_path):
    def run(run_id: str, steps: int) -> Path:
        code = main.main(["--exp", "segment", "--id", run_id, "--pretrain_config", "configs/segmentation/tiny.yaml",
                          "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path), "--batch_size", "2",
                          "--config_mod", f"train.max_steps={steps}", "data.height=32", "data.width=48",
                          "train.val_every=2", "train.image_every=2", "data.val_frames=2", *UNALIGNED])
        assert code == 0
        return tmp_path / f"segment_{run_id}_CLEVRER_42"

    straight, split = _straight_and_split(run, 4, 3)
    assert_same_training_state(straight, split)


# ----------------------------------------------------------------------------- the loop alone

def _toy_run(tmp_path: Path, steps: int, run_id: str, data=None, on_log=None) -> tuple[ToyTask, Path]:
    cfg = _cfg(tmp_path, steps, run_id)
    seed_everything(cfg.run.seed)
    task, run_dir = ToyTask(), prepare_run_dir(cfg, CPU)
    data = data if data is not None else _dataset()
    logger = RunLogger(run_dir)
    train(task, lambda start: make_train_loader(data, 4, cfg.run.seed, CPU, start), cfg, run_dir, CPU, logger,
          on_log=on_log)
    logger.close()
    return task, run_dir


def test_validation_draws_never_move_the_training_stream(tmp_path):
    quiet, _ = _toy_run(tmp_path, 8, "quiet")

    def validate(step: int, final: bool) -> dict[str, float]:
        return {"noise": float(torch.rand(3).sum() + np.random.rand() + torch.randn(2).sum())}

    busy, _ = _toy_run(tmp_path, 8, "busy", on_log=validate)
    assert_bitwise_equal(quiet.state_dict(), busy.state_dict())


def test_killed_run_leftovers_removed_and_each_step_logged_once(tmp_path):
    _, run_dir = _toy_run(tmp_path, 6, "killed")
    # What a kill -9 after step 6's checkpoint leaves: a torn temp checkpoint and log rows past the checkpoint.
    torn = [run_dir / ".model_last.pth.tmp-4242.pth", run_dir / "per_video" / "video_1" / ".result.pth.tmp-7.pth"]
    for path in torn:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 1000)
    with open(run_dir / "stats.jsonl", "a") as stats:
        stats.write('{"step": 8, "split": "train", "loss": 1.0}\n{"step": 9, "spl')
    _toy_run(tmp_path, 10, "killed")
    assert not any(path.exists() for path in torn)
    assert [r["step"] for r in read_stats(run_dir)] == [2, 4, 6, 8, 10]


class _DamagedAt(torch.utils.data.Dataset):
    """The toy data with one sample that fails like a damaged PNG until it is repaired."""

    def __init__(self, bad_index: int) -> None:
        self.data, self.bad_index = _dataset(), bad_index

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        if index == self.bad_index:
            raise UserError(f"video_{index}/image_3.png: corrupt or unreadable PNG")
        return self.data[index]


def test_data_error_saves_the_steps_since_the_last_checkpoint(tmp_path):
    straight, _ = _toy_run(tmp_path, 10, "straight")
    # A sample first read by the fifth step (samples 16-19 of the seed-5 order, 4 per batch): step 4, trained
    # after the checkpoint of step 3, is lost unless the data error saves it.
    bad_index = list(ResumableSampler(20, seed=5)._epoch_indices(0))[16]
    with pytest.raises(UserError, match="image_3.png: corrupt.*stopped at step 4 and saved it"):
        _toy_run(tmp_path, 10, "damaged", data=_DamagedAt(bad_index))
    run_dir = tmp_path / "toy_damaged_T_5"
    assert load_checkpoint(run_dir / LAST_CHECKPOINT)["step"] == 4
    resumed, _ = _toy_run(tmp_path, 10, "damaged")  # the file repaired: resume to the end
    assert_bitwise_equal(straight.state_dict(), resumed.state_dict())


def test_a_data_loader_worker_error_is_one_line():
    wrapped = UserError("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\ntools.core.errors.UserError: a/image_3.png: corrupt\n")
    assert worker_error_message(wrapped) == "a/image_3.png: corrupt"
    assert worker_error_message(UserError("plain: message")) == "plain: message"
