"""Every bad input and fault of issue 14 ends in one line naming the file or flag, a non-zero exit, no traceback
and no half-made run folder."""
import errno
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from tests.conftest import TINY_DDPM, write_synthetic_videos
from tools.core.checkpoint import load_checkpoint, save_checkpoint
from tools.core.errors import UserError
from tools.data.check import check_dataset
from evals.scoring.run import EvalSettings, jaccard_section
from tests.test_eval_run import run_eval, true_masks, write_predictions
from tools.core.distributed import DistContext
from tools.data.classes import class_name
from tools.data.clevrer import ClevrerDataset
from tools.data.loader import make_train_loader
from torch.utils.data import TensorDataset


def _refused(capsys, args: list[str]) -> str:
    """Run main.py with `args`; it must exit 2 with one line on stderr and no traceback. Returns the line."""
    capsys.readouterr()
    assert main.main(args) == main.EXIT_USER_ERROR
    return _one_line_error(capsys)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _ddpm_args(data: Path, results: Path, first_model, *mods: str, batch: str = "2") -> list[str]:
    return ["--exp", "ddpm", "--id", "f", "--pretrain_config", "configs/latent-diffusion/tiny.yaml",
            "--data_path", str(data), "--results_dir", str(results), "--first_model", str(first_model),
            "--batch_size", batch, "--config_mod", "train.max_steps=1", *TINY_DDPM, *mods]


def test_same_video_id_twice_in_a_split(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_synthetic_videos(tmp_path, "train", [3, 8], rng)
    write_synthetic_videos(tmp_path, "hidden", [9], rng)
    shutil.copytree(tmp_path / "train" / "video_3", tmp_path / "train" / "video_0003")
    with pytest.raises(UserError, match="video_0003 and .*video_3 have the same video id 3"):
        ClevrerDataset(tmp_path, "train")
    summary = check_dataset(tmp_path)
    assert not summary.ok and any("same video id 3" in p for p in summary.problems)
    assert main.main(["--exp", "check_data", "--data_path", str(tmp_path)]) == 1
    assert "same video id 3" in _refused(capsys, _ddpm_args(tmp_path, tmp_path / "results", "none"))
    assert not (tmp_path / "results").exists()


def test_live_lock_refused_and_stale_lock_taken_over(synthetic_clevrer, tmp_path, capsys):
    run_dir = tmp_path / "ddpm_f_CLEVRER_42"
    run_dir.mkdir()
    (run_dir / ".lock").write_text(f"{os.getppid()} {os.uname().nodename}\n")  # a process that is alive
    err = _refused(capsys, _ddpm_args(synthetic_clevrer, tmp_path, "none"))
    assert f"in use by process {os.getppid()}" in err and str(run_dir / ".lock") in err
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"], "the refused run wrote nothing"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / ".lock").write_text(f"{finished.stdout.strip()} {os.uname().nodename}\n")  # its process is gone
    assert main.main(_ddpm_args(synthetic_clevrer, tmp_path, "none")) == 0
    assert "stale lock" in capsys.readouterr().out
    assert (run_dir / "model_last.pth").exists() and not (run_dir / ".lock").exists(), "released at the end"


def test_empty_checkpoints(synthetic_clevrer, tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.touch()
    assert "empty.pth' is empty (0 bytes)" in _refused(capsys, _ddpm_args(synthetic_clevrer, tmp_path, empty))
    assert main.main(_ddpm_args(synthetic_clevrer, tmp_path, "none")) == 0
    run_dir = tmp_path / "ddpm_f_CLEVRER_42"
    (run_dir / "model_last.pth").write_bytes(b"")
    resume = _ddpm_args(synthetic_clevrer, tmp_path, "none", "train.max_steps=2")
    assert "model_last.pth' is empty (0 bytes)" in _refused(capsys, resume)
    assert run_dir.is_dir(), "an existing run folder is never removed"


class _Payload:
    """Unpickling this with weights_only=False would create the marker folder."""

    marker = ""

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    _Payload.marker = str(tmp_path / "pwned")
    with open(tmp_path / "evil.pth", "wb") as handle:
        torch.save({"model": {}, "step": 1, "extra": _Payload()}, handle, pickle_protocol=2)
    with pytest.raises(UserError) as caught:
        load_checkpoint(tmp_path / "evil.pth")
    message = str(caught.value)
    assert "holds code or Python objects that are not allowed" in message and "evil.pth" in message
    assert "weights_only" not in message and "truncated" not in message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("flags, mods, expected", [
    ([], ["train.max_steps=abc"], "train.max_steps=abc is not an integer"),
    (["--batch_size", "-3"], [], "--batch_size -3 is not a batch size"),
    (["--batch_size", "0"], [], "--batch_size 0 is not a batch size"),
    ([], ["train.lr=fast"], "train.lr=fast is not a number"),
])
def test_bad_flags_refused_before_anything_is_written(synthetic_clevrer, tmp_path, capsys, flags, mods, expected):
    args = _ddpm_args(synthetic_clevrer, tmp_path / "results", "none", *mods)
    assert expected in _refused(capsys, args + flags)
    assert not (tmp_path / "results").exists()


def test_predict_batch_size_zero_refused(synthetic_clevrer, tmp_path, capsys):
    args = ["--exp", "predict", "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path)]
    assert "--batch_size 0" in _refused(capsys, args + ["--batch_size", "0"])
    zero = args + ["--config_mod", "predict.batch_size=0", "predict.ddpm=x.pth"]
    assert "predict.batch_size=0" in _refused(capsys, zero)
    assert list(tmp_path.iterdir()) == []


def test_late_validation_failures_leave_no_run_folder(synthetic_clevrer, tmp_path, capsys):
    segment = ["--exp", "segment", "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path),
               "--pretrain_config", "configs/segmentation/tiny.yaml", "--config_mod", "train.log_every=2",
               "train.val_every=3"]
    assert "train.val_every=3 must be a multiple of train.log_every" in _refused(capsys, segment)
    predict = ["--exp", "predict", "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path),
               "--config_mod", f"predict.ddpm={tmp_path / 'absent.pth'}"]
    assert "absent.pth" in _refused(capsys, predict)
    (tmp_path / "foreign.pth").write_bytes(pickle.dumps({"a": 1}))
    predict[-1] = f"predict.ddpm={tmp_path / 'foreign.pth'}"
    assert "foreign.pth" in _refused(capsys, predict)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.pth"], "no half-made run folder"


def test_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"model": {}, "step": 1}, tmp_path / "model_last.pth")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=f"no space left on the device holding '{tmp_path}'"):
        save_checkpoint({"model": {}, "step": 2}, tmp_path / "model_last.pth")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "model_last.pth")["step"] == 1, "the previous checkpoint is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["model_last.pth"], "no temporary file left"


def test_disk_full_anywhere_is_one_line(tmp_path, monkeypatch, capsys):
    def full_disk(cfg, ctx):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "stats.jsonl"))

    monkeypatch.setattr("tools.core.stages.resolve_stage", lambda exp: full_disk)
    err = _refused(capsys, ["--exp", "eval", "--results_dir", str(tmp_path)])
    assert f"no space left on the device holding '{tmp_path / 'run'}'" in err


def test_batch_larger_than_the_data_is_clamped(capsys):
    ctx = DistContext(0, 1, 0, torch.device("cpu"))
    loader = make_train_loader(TensorDataset(torch.arange(5)), 64, 0, ctx, name="toy data")
    first = next(iter(loader))[0]
    assert sorted(first.tolist()) == [0, 1, 2, 3, 4], "one batch holds the whole data, never 64 samples"
    assert "--batch_size 64 is larger than the 5 samples of toy data per process; using batch size 5" \
        in capsys.readouterr().out


def test_eval_refuses_predictions_of_another_dataset(synthetic_clevrer, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(synthetic_clevrer / "val", other / "val")  # same video ids, another dataset folder
    folder = write_predictions(tmp_path / "pred", true_masks(synthetic_clevrer, "val", [3, 4]), [3, 4])
    (folder / "config.yaml").write_text(f"run:\n  data_path: {synthetic_clevrer}\n")
    capsys.readouterr()
    assert run_eval(other, tmp_path / "results", folder, "eval.metrics=[jaccard]") == main.EXIT_USER_ERROR
    err = _one_line_error(capsys)
    assert f"--data_path {other} is not the dataset the predictions were made from" in err
    assert str(folder / "config.yaml") in err
    assert not (tmp_path / "results").exists()
    assert run_eval(synthetic_clevrer, tmp_path / "results", folder, "eval.metrics=[jaccard]",
                    "eval.baselines=false") == 0


def test_best_classes_only_lists_classes_in_truth_or_prediction():
    truth = torch.zeros(2, 8, 8, dtype=torch.uint8)
    truth[0, :4, :4] = 5
    truth[1, 4:, 4:] = 9
    pred = torch.zeros_like(truth)
    pred[0, :4, :2] = 5
    pred[1, :2, :2] = 12  # predicted only
    section = jaccard_section(pred, truth, EvalSettings(per_class_rows=49))
    listed = {name for name, _ in section["best_classes"]} | {name for name, _ in section["worst_classes"]}
    assert listed == {class_name(i) for i in (0, 5, 9, 12)}
    assert dict(section["best_classes"])[class_name(5)] == pytest.approx(0.5)
