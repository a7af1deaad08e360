"""Natural-video readers on tiny videos written here with PyAV: UCF-101 layout and generic folders."""
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tools.data.video import UCF101Dataset, VideoFolderDataset, clip_starts, count_frames
from tools.core.errors import UserError

HEIGHT, WIDTH, N_FRAMES = 32, 48, 10


def _frame_value(index: int) -> int:
    return 20 + (22 * index) % 230  # frame i is a flat grey of this level, so decoded clips reveal their indices


def write_avi(path: Path, n_frames: int = N_FRAMES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(n_frames):
            image = np.full((HEIGHT, WIDTH, 3), _frame_value(index), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_frame_folder(folder: Path, n_frames: int, suffix: str = ".png") -> Path:
    folder.mkdir(parents=True)
    for index in range(n_frames):
        image = np.full((HEIGHT, WIDTH, 3), _frame_value(index), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"frame_{index}{suffix}")
    return folder


def _levels(frames: torch.Tensor) -> list[int]:
    return [round(float(level)) for level in frames.mean(dim=(1, 2, 3)) * 255]


@pytest.fixture
def ucf_root(tmp_path) -> Path:
    videos = tmp_path / "UCF-101"
    write_avi(videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    write_avi(videos / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi", n_frames=7)
    write_avi(videos / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi")
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\n")
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n"
                                           "HandStandPushups/v_HandStandPushups_g08_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("HandStandPushups/v_HandStandPushups_g01_c01.avi\n")
    return tmp_path


def test_count_frames_and_clip_starts(ucf_root):
    assert count_frames(ucf_root / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi") == N_FRAMES
    assert list(clip_starts(10, clip_len=3, stride=1, clip_step=None)) == [0, 3, 6]
    assert list(clip_starts(10, clip_len=4, stride=2, clip_step=None)) == [0]
    assert list(clip_starts(10, clip_len=4, stride=2, clip_step=1)) == [0, 1, 2, 3]
    assert list(clip_starts(6, clip_len=4, stride=2, clip_step=None)) == []


def test_frames_counted_by_demux_when_container_has_no_count(tmp_path):
    path = write_avi(tmp_path / "clip.mkv")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska stores no frame count
    assert count_frames(path) == N_FRAMES
    dataset = VideoFolderDataset(tmp_path, clip_len=5, stride=1)
    assert len(dataset) == 2
    expected = [_frame_value(i) for i in range(5, 10)]
    assert all(abs(got - want) <= 3 for got, want in zip(_levels(dataset[1]["frames"]), expected))


def test_ucf101_train_clips(ucf_root):
    dataset = UCF101Dataset(ucf_root, "train", fold=1, clip_len=3, stride=2)
    assert dataset.classes == ["ApplyEyeMakeup", "HandstandPushups"]
    assert len(dataset) == 4  # span 5: two clips from each 10-frame video
    item = dataset[1]
    assert item["frames"].shape == (3, 3, HEIGHT, WIDTH) and item["frames"].dtype == torch.float32
    assert 0.0 <= item["frames"].min() and item["frames"].max() <= 1.0
    assert item["label"] == 0 and item["path"].endswith("v_ApplyEyeMakeup_g01_c01.avi")
    expected = [_frame_value(i) for i in (5, 7, 9)]
    assert all(abs(got - want) <= 3 for got, want in zip(_levels(item["frames"]), expected))
    assert dataset[2]["label"] == 1


def test_ucf101_test_split_and_resize(ucf_root):
    dataset = UCF101Dataset(ucf_root, "test", clip_len=4, stride=1, size=(16, 24))
    assert len(dataset) == 1  # the 7-frame video holds one 4-frame clip
    item = dataset[0]
    assert item["frames"].shape == (4, 3, 16, 24) and item["label"] == 1


def test_ucf101_missing_lists_and_videos(ucf_root, tmp_path):
    (ucf_root / "ucfTrainTestlist" / "trainlist01.txt").unlink()
    with pytest.raises(UserError, match="trainlist01.txt is missing.*ucfTrainTestlist"):
        UCF101Dataset(ucf_root, "train")
    with pytest.raises(UserError, match="UCF-101 is missing"):
        UCF101Dataset(tmp_path / "elsewhere", "train")
    (ucf_root / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi").unlink()
    with pytest.raises(UserError, match="listed in .*testlist01.txt but missing"):
        UCF101Dataset(ucf_root, "test", clip_len=2)


def test_video_folder_with_file_and_frame_folder(tmp_path):
    write_avi(tmp_path / "clips" / "a.avi")
    write_frame_folder(tmp_path / "clips" / "b_frames", 8)
    write_frame_folder(tmp_path / "clips" / "c_frames", 6, suffix=".jpg")
    dataset = VideoFolderDataset(tmp_path / "clips", clip_len=4, stride=2)
    # span 7: one clip from the 10-frame video and one from the 8-frame folder, none from 6 frames
    assert len(dataset) == 2
    video_item, folder_item = dataset[0], dataset[1]
    assert video_item["path"].endswith("a.avi") and folder_item["path"].endswith("b_frames")
    for item in (video_item, folder_item):
        assert item["frames"].shape == (4, 3, HEIGHT, WIDTH) and item["frames"].dtype == torch.float32
        assert item["label"] == 0
    assert _levels(folder_item["frames"]) == [_frame_value(i) for i in (0, 2, 4, 6)]
    expected = [_frame_value(i) for i in (0, 2, 4, 6)]
    assert all(abs(got - want) <= 3 for got, want in zip(_levels(video_item["frames"]), expected))


def test_video_folder_class_subfolders_and_errors(tmp_path):
    write_avi(tmp_path / "data" / "walk" / "x.avi")
    write_frame_folder(tmp_path / "data" / "run" / "y", 5)
    dataset = VideoFolderDataset(tmp_path / "data", clip_len=5, size=(8, 12))
    assert dataset.classes == ["run", "walk"]
    labels = sorted((item["path"].split("/")[-1], item["label"]) for item in (dataset[0], dataset[1], dataset[2]))
    assert labels == [("x.avi", 1), ("x.avi", 1), ("y", 0)]
    assert dataset[0]["frames"].shape == (5, 3, 8, 12)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no video file"):
        VideoFolderDataset(tmp_path / "empty", clip_len=2)
    with pytest.raises(UserError, match="no clip of 20 frames"):
        VideoFolderDataset(tmp_path / "data", clip_len=20)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.avi").write_bytes(b"not a video")
    with pytest.raises(UserError, match="broken.avi: cannot open the video"):
        VideoFolderDataset(tmp_path / "bad", clip_len=2)


def test_centre_crop_keeps_the_middle_and_squash_keeps_everything():
    from tools.data.video import fit_frames

    frames = torch.zeros(1, 3, 20, 40)
    frames[..., 10:30] = 1.0  # a bright middle half of the width
    cropped = fit_frames(frames, (10, 10), "center")
    squashed = fit_frames(frames, (10, 10), "squash")
    assert cropped.shape == squashed.shape == (1, 3, 10, 10)
    assert cropped[..., 1:-1].min() > 0.99, "the centre crop shows only the middle (its edge columns blend)"
    assert squashed[..., 0].max() < 0.01 and squashed[..., 5].min() > 0.99, "squash keeps the dark sides"


def test_time_split_never_shares_a_frame_and_include_filters(tmp_path):
    write_avi(tmp_path / "clips" / "a.avi", n_frames=20)
    write_avi(tmp_path / "clips" / "b.avi", n_frames=20)
    options = dict(clip_len=3, stride=1, clip_step=1, include=["a.avi"], test_fraction=0.25)
    train = VideoFolderDataset(tmp_path / "clips", time_split="train", **options)
    test = VideoFolderDataset(tmp_path / "clips", time_split="test", **options)
    train_frames = {f for clip in train.clips for f in clip.frame_indices}
    test_frames = {f for clip in test.clips for f in clip.frame_indices}
    assert max(train_frames) == 14 and min(test_frames) == 15 and not train_frames & test_frames
    assert {clip.source.path.name for clip in train.clips + test.clips} == {"a.avi"}
    assert test[0]["start"] == 15
    with pytest.raises(UserError, match=r"matching data.include=\['c.avi'\]"):
        VideoFolderDataset(tmp_path / "clips", clip_len=3, include=["c.avi"])


def test_cached_decoding_gives_the_same_clips(tmp_path):
    write_avi(tmp_path / "clips" / "a.avi", n_frames=12)
    plain = VideoFolderDataset(tmp_path / "clips", clip_len=4, stride=2, size=(16, 16))
    cached = VideoFolderDataset(tmp_path / "clips", clip_len=4, stride=2, size=(16, 16), cache=True)
    for index in range(len(plain)):
        assert torch.allclose(plain[index]["frames"], cached[index]["frames"], atol=1 / 255 + 1e-6)


def test_config_wiring_of_video_clips(tmp_path):
    from omegaconf import OmegaConf

    from tools.data.datasets import validation_clips, video_clips

    write_avi(tmp_path / "clips" / "a.avi", n_frames=20)
    cfg = OmegaConf.load("configs/autoencoder/video_cpu.yaml")
    cfg.run = {"data": "FOLDER", "data_path": str(tmp_path / "clips")}
    cfg.data.update(frames=4, frame_stride=2, height=16, width=16)
    train = video_clips(cfg, "train")
    assert train[0]["frames"].shape == (4, 3, 16, 16) and len(train) == 15 - 7 + 1  # frames 0-14, span 7, step 1
    cfg.data.frame_stride = 1
    held_out = validation_clips(cfg, 2)  # test frames 15-19 (test_clip_step 2): clips starting at 15 and 17? 17+3 > 19
    assert len(held_out) == 1 and held_out[0]["start"] == 15
    cfg.data.test_fraction = 0.0
    with pytest.raises(UserError, match="data.test_fraction"):
        video_clips(cfg, "test")


def test_mismatched_frames_and_data_sections_are_refused():
    from omegaconf import OmegaConf

    from tools.diffusion.frame_sets import check_frames_config

    cfg = OmegaConf.load("configs/latent-diffusion/video_cpu.yaml")
    check_frames_config(cfg)
    cfg.data.frames = 12
    with pytest.raises(UserError, match="frames.n_frames=16 but data.frames=12"):
        check_frames_config(cfg)
    cfg = OmegaConf.load("configs/latent-diffusion/tiny.yaml")
    cfg.data.frames, cfg.frames.n_frames, cfg.data.cond_frames = 16, 16, 8
    with pytest.raises(UserError, match="prob_competition_case"):
        check_frames_config(cfg)


def test_tuning_split_never_touches_the_reported_test_frames(tmp_path):
    write_avi(tmp_path / "clips" / "a.avi", n_frames=40)
    options = dict(clip_len=2, stride=1, clip_step=1, test_fraction=0.25)
    reported = {f for c in VideoFolderDataset(tmp_path / "clips", time_split="test", **options).clips
                for f in c.frame_indices}
    tuning = dict(options, test_fraction=1 / 3, time_range=(0.0, 0.75))
    tune_train = VideoFolderDataset(tmp_path / "clips", time_split="train", **tuning)
    tune_test = VideoFolderDataset(tmp_path / "clips", time_split="test", **tuning)
    train_frames = {f for c in tune_train.clips for f in c.frame_indices}
    test_frames = {f for c in tune_test.clips for f in c.frame_indices}
    assert reported == set(range(30, 40)) and test_frames == set(range(20, 30)) and train_frames == set(range(20))
    with pytest.raises(UserError, match="data.time_range"):
        VideoFolderDataset(tmp_path / "clips", time_split="test", **dict(tuning, time_range=(0.5, 0.2)))
