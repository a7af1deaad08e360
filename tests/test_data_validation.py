"""Every bad input of the competition format ends in one UserError naming the file; check_data's verdict."""
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tools.data.check import check_dataset, run_check_data
from tools.data.clevrer import ClevrerDataset, read_mask
from tools.data.validate import validate_video
from tools.core.errors import UserError

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_samples"
pytestmark = pytest.mark.usefixtures("real_samples")  # fails loudly when ../shared is missing


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    """A copy of one real labeled video as train/video_0."""
    shutil.copytree(REAL / "train" / "video_0", tmp_path / "train" / "video_0")
    return tmp_path


def _video(root: Path) -> Path:
    return root / "train" / "video_0"


def _raises(match: str, function, *args, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as caught:
        function(*args, **kwargs)
    return str(caught.value)


def _png_bytes(mode: str, size=(240, 160)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_missing_root_and_split(tmp_path, dataset_root):
    message = _raises("does not exist", ClevrerDataset, tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in message and "--data_path" in message
    message = _raises("split folder .* is missing", ClevrerDataset, dataset_root, "val")
    assert str(dataset_root / "val") in message


def test_empty_split(dataset_root):
    (dataset_root / "unlabeled").mkdir()
    message = _raises("is empty", ClevrerDataset, dataset_root, "unlabeled")
    assert str(dataset_root / "unlabeled") in message


def test_missing_frame(dataset_root):
    (_video(dataset_root) / "image_5.png").unlink()
    message = _raises("missing frames image_5.png", ClevrerDataset, dataset_root, "train")
    assert str(_video(dataset_root)) in message


def test_extra_frame(dataset_root):
    shutil.copy(_video(dataset_root) / "image_21.png", _video(dataset_root) / "image_22.png")
    _raises("extra frames image_22.png", ClevrerDataset, dataset_root, "train")


def test_hidden_split_expects_eleven_frames(tmp_path):
    shutil.copytree(REAL / "unlabeled" / "video_2000", tmp_path / "hidden" / "video_15000")
    message = _raises("extra frames image_11.png", ClevrerDataset, tmp_path, "hidden")
    assert "and 6 more" in message
    for index in range(11, 22):
        (tmp_path / "hidden" / "video_15000" / f"image_{index}.png").unlink()
    assert len(ClevrerDataset(tmp_path, "hidden")) == 1
    _raises("indices must lie in 0..10", ClevrerDataset, tmp_path, "hidden", frame_indices=[21])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_png(dataset_root, damage):
    path = _video(dataset_root) / "image_3.png"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a png", "empty": b""}[damage])
    dataset = ClevrerDataset(dataset_root, "train")
    message = _raises("corrupt or unreadable PNG", dataset.__getitem__, 0)
    assert str(path) in message


@pytest.mark.parametrize("mode, expected", [("L", "1 channel"), ("RGBA", "4 channel"), ("I;16", "16-bit")])
def test_non_rgb_or_wrong_bit_depth(dataset_root, mode, expected):
    path = _video(dataset_root) / "image_7.png"
    path.write_bytes(_png_bytes(mode))
    message = _raises(expected, ClevrerDataset(dataset_root, "train").__getitem__, 0)
    assert str(path) in message and "8-bit RGB" in message


def test_frame_size_differs_within_video(dataset_root):
    path = _video(dataset_root) / "image_9.png"
    path.write_bytes(_png_bytes("RGB", size=(120, 80)))
    message = _raises("frame is 120x80", ClevrerDataset(dataset_root, "train").__getitem__, 0)
    assert str(path) in message and "image_0.png" in message


def _write_mask(root: Path, mask: np.ndarray) -> Path:
    path = _video(root) / "mask.npy"
    np.save(path, mask)
    return path


@pytest.mark.parametrize("shape", [(21, 160, 240), (22, 80, 120), (22, 160, 240, 1)])
def test_mask_wrong_shape(dataset_root, shape):
    path = _write_mask(dataset_root, np.zeros(shape, dtype=np.uint8))
    message = _raises(re.escape(f"mask has shape {shape}"), ClevrerDataset(dataset_root, "train").__getitem__, 0)
    assert str(path) in message and "(22, 160, 240)" in message


def test_mask_wrong_dtype(dataset_root):
    path = _write_mask(dataset_root, np.load(_video(dataset_root) / "mask.npy").astype(np.int64))
    message = _raises("dtype int64, expected uint8", ClevrerDataset(dataset_root, "train").__getitem__, 0)
    assert str(path) in message


def test_unreadable_mask_file(dataset_root):
    path = _video(dataset_root) / "mask.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    _raises("unreadable mask file", read_mask, path)


def test_mask_values_above_48(dataset_root):
    mask = np.load(_video(dataset_root) / "mask.npy")
    mask[3, :2, :5] = 49
    mask[4, 0, 0] = 255
    path = _write_mask(dataset_root, mask)
    message = _raises("11 mask pixels have class ids above 48", ClevrerDataset(dataset_root, "train").__getitem__, 0)
    assert str(path) in message and "mask_mode" not in message, "no remedy a user cannot reach"
    dataset = ClevrerDataset(dataset_root, "train", mask_mode="background")
    with pytest.warns(UserWarning, match="mapped 11 mask pixels"):
        item = dataset[0]
    assert int(item["mask"].max()) <= 48
    assert (item["mask"][3, :2, :5] == 0).all() and item["mask"][4, 0, 0] == 0
    untouched = torch.from_numpy(mask).long()
    assert torch.equal(item["mask"][5:], untouched[5:])
    _raises("mask_mode 'zero' is unknown", ClevrerDataset, dataset_root, "train", mask_mode="zero")


def test_validate_video_collects_every_problem(dataset_root):
    video = _video(dataset_root)
    assert validate_video(video, 22) == []
    (video / "image_2.png").unlink()
    (video / "image_4.png").write_bytes(b"broken")
    (video / "image_6.png").write_bytes(_png_bytes("RGB", size=(100, 50)))
    np.save(video / "mask.npy", np.zeros((22, 160, 240), dtype=np.int32))
    problems = validate_video(video, 22)
    assert len(problems) == 4
    for expected in ("missing frames image_2.png", "image_4.png: corrupt", "image_6.png: frame is 100x50",
                     "dtype int32"):
        assert any(expected in problem for problem in problems), expected


def test_check_data_passes_on_real_samples(capsys):
    summary = check_dataset(REAL)
    assert summary.ok and list(summary.splits) == ["train", "unlabeled"]
    train = summary.splits["train"]
    assert (train.videos, train.frames, train.masks) == (3, 66, 3)
    assert len(train.classes) == 15 and train.late_class_videos == [2]
    assert summary.splits["unlabeled"].masks == 0
    assert run_check_data(str(REAL)) == 0
    assert "OK: no problems found" in capsys.readouterr().out


def test_check_data_fails_on_broken_copy(dataset_root, capsys):
    (_video(dataset_root) / "image_5.png").write_bytes(b"broken")
    (dataset_root / "val").mkdir()
    assert run_check_data(str(dataset_root)) == 1
    out = capsys.readouterr().out
    assert str(_video(dataset_root) / "image_5.png") in out
    assert "is empty" in out and "FAILED: 2 problem(s)" in out


def test_check_data_on_folder_without_splits(tmp_path):
    _raises("holds none of the split folders", check_dataset, tmp_path)
