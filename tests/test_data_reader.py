"""The competition-format reader on real samples: shapes, dtypes, order, masks, class ids, resize."""
import colorsys
import shutil
from pathlib import Path

import numpy as np
import pyspng
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from tools.data.classes import (COLORS, MATERIALS, NUM_CLASSES, PALETTE, SHAPES, class_id, class_name,
                                class_parts, colorize_mask)
from tools.data.clevrer import (ClevrerDataset, list_videos, read_frames, read_mask,
                                resize_mask)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_samples"
pytestmark = pytest.mark.usefixtures("real_samples")  # fails loudly when ../shared is missing

# CLEVR's colour hues in degrees; gray is told apart by its low saturation.
COLOR_HUES = {"red": 0, "blue": 229, "green": 114, "brown": 28, "cyan": 180, "purple": 275, "yellow": 55}


def test_class_ids_round_trip_and_formula():
    ids = [class_id(s, m, c) for s in SHAPES for m in MATERIALS for c in COLORS]
    assert sorted(ids) == list(range(1, NUM_CLASSES))
    assert all(class_id(*class_parts(i)) == i for i in range(1, NUM_CLASSES))
    assert class_id("cube", "metal", "gray") == 1
    assert class_id("cylinder", "rubber", "yellow") == 48
    assert class_id(1, 1, 5) == 1 + 5 + 8 + 16
    assert class_name(30) == "cyan rubber sphere"
    assert class_name(0) == "background"
    with pytest.raises(ValueError):
        class_parts(49)
    with pytest.raises(ValueError):
        class_id("cone", "metal", "red")


def test_palette_distinct_and_colorize():
    assert PALETTE.shape == (NUM_CLASSES, 3) and PALETTE.dtype == np.uint8
    assert len({tuple(rgb) for rgb in PALETTE.tolist()}) == NUM_CLASSES
    assert tuple(PALETTE[0]) == (0, 0, 0)
    mask = torch.tensor([[0, 30], [48, 99]])
    rgb = colorize_mask(mask)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 1] == PALETTE[30]).all() and (rgb[1, 0] == PALETTE[48]).all()
    assert (rgb[1, 1] == 255).all()


def test_list_videos_real_and_natural_order(tmp_path):
    assert [e.id for e in list_videos(REAL, "train")] == [0, 1, 2]
    entries = list_videos(REAL, "unlabeled")
    assert [e.id for e in entries] == [2000, 2002, 2005]
    assert all(e.n_frames == 22 and not e.has_mask for e in entries)
    for video_id in (10, 2, 1, 100):
        (tmp_path / "train" / f"video_{video_id}").mkdir(parents=True)
    assert [e.id for e in list_videos(tmp_path, "train")] == [1, 2, 10, 100]


def test_real_train_items():
    dataset = ClevrerDataset(REAL, "train")
    assert len(dataset) == 3
    for index, video_id in enumerate((0, 1, 2)):
        item = dataset[index]
        frames, mask = item["frames"], item["mask"]
        assert frames.shape == (22, 3, 160, 240) and frames.dtype == torch.float32
        assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.std() > 0.01
        assert mask.shape == (22, 160, 240) and mask.dtype == torch.int64
        raw = np.load(REAL / "train" / f"video_{video_id}" / "mask.npy")
        assert torch.equal(mask, torch.from_numpy(raw).long())
        assert item["has_mask"].dtype == torch.bool and bool(item["has_mask"])
        assert item["video_id"] == video_id
    first_png = pyspng.load((REAL / "train" / "video_0" / "image_0.png").read_bytes())
    assert torch.equal(dataset[0]["frames"][0], torch.from_numpy(first_png).permute(2, 0, 1).float() / 255)


def test_real_unlabeled_items_have_ignore_mask():
    item = ClevrerDataset(REAL, "unlabeled")[1]
    assert item["frames"].shape == (22, 3, 160, 240)
    assert item["mask"].dtype == torch.int64 and (item["mask"] == -1).all()
    assert not bool(item["has_mask"]) and item["video_id"] == 2002


def test_real_mask_ids_match_the_colour_of_their_pixels():
    """The class-id formula decodes the colour name that the real pixels show."""
    checked = 0
    for entry in list_videos(REAL, "train"):
        mask = read_mask(entry.path)
        assert mask.dtype == torch.uint8 and mask.shape == (22, 160, 240) and int(mask.max()) <= 48
        image = (read_frames(entry.path, [21])[0].permute(1, 2, 0).numpy() * 255)
        for class_index in np.unique(mask[21].numpy()):
            selected = mask[21].numpy() == class_index
            if class_index == 0 or selected.sum() < 100:
                continue
            _, _, color = class_parts(int(class_index))
            assert _colour_name(np.median(image[selected], axis=0)) == color, class_name(int(class_index))
            checked += 1
    assert checked >= 12


def _colour_name(rgb: np.ndarray) -> str:
    hue, saturation, _ = colorsys.rgb_to_hsv(*(rgb / 255))
    if saturation < 0.15:
        return "gray"
    distance = {name: min(abs(hue * 360 - h), 360 - abs(hue * 360 - h)) for name, h in COLOR_HUES.items()}
    return min(distance, key=distance.get)


@pytest.mark.parametrize("indices", [list(range(11)), [21], [0, 10, 21]])
def test_frame_index_subsets(indices):
    dataset = ClevrerDataset(REAL, "train", frame_indices=indices)
    item = dataset[2]
    assert item["frames"].shape == (len(indices), 3, 160, 240)
    full_mask = torch.from_numpy(np.load(REAL / "train" / "video_2" / "mask.npy")).long()
    assert torch.equal(item["mask"], full_mask[indices])


def test_resize_to_80x120_keeps_ids_by_nearest():
    full = ClevrerDataset(REAL, "train", frame_indices=[0, 21])[1]
    small = ClevrerDataset(REAL, "train", frame_indices=[0, 21], size=(80, 120))[1]
    assert small["frames"].shape == (2, 3, 80, 120) and small["frames"].dtype == torch.float32
    assert 0.0 <= small["frames"].min() and small["frames"].max() <= 1.0
    assert small["mask"].shape == (2, 80, 120) and small["mask"].dtype == torch.int64
    # Nearest by pixel centres: a 2x downscale keeps the pixels at odd coordinates.
    assert torch.equal(small["mask"], full["mask"][:, 1::2, 1::2])
    assert set(small["mask"].unique().tolist()) <= set(full["mask"].unique().tolist())
    mean_full = full["frames"].mean(dim=(2, 3))
    assert torch.allclose(small["frames"].mean(dim=(2, 3)), mean_full, atol=0.01)


def test_resize_mask_upscale_and_ignore_index():
    mask = torch.tensor([[[-1, 5], [7, 48]]])
    up = resize_mask(mask, (4, 4))
    assert up.shape == (1, 4, 4) and set(up.unique().tolist()) == {-1, 5, 7, 48}
    assert (up[0, :2, :2] == -1).all() and (up[0, 2:, 2:] == 48).all()


def test_two_splits_through_one_dataloader():
    dataset = ConcatDataset([ClevrerDataset(REAL, split, frame_indices=range(11), size=(40, 60))
                             for split in ("train", "unlabeled")])
    assert len(dataset) == 6
    batch = next(iter(DataLoader(dataset, batch_size=6, shuffle=False)))
    assert batch["frames"].shape == (6, 11, 3, 40, 60)
    assert batch["mask"].shape == (6, 11, 40, 60)
    assert batch["has_mask"].tolist() == [True] * 3 + [False] * 3
    assert batch["video_id"].tolist() == [0, 1, 2, 2000, 2002, 2005]


def test_same_reader_on_hidden_split(tmp_path):
    video = tmp_path / "hidden" / "video_15000"
    video.mkdir(parents=True)
    for index in range(11):
        shutil.copy(REAL / "unlabeled" / "video_2000" / f"image_{index}.png", video)
    item = ClevrerDataset(tmp_path, "hidden")[0]
    assert item["frames"].shape == (11, 3, 160, 240) and item["video_id"] == 15000
    assert (item["mask"] == -1).all()
