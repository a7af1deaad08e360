"""Segmenter: network shapes, TTA, CE+Dice loss, `--exp segment` training/resume and pseudo-label mode."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main
from models.segmenter import Segmenter
from tools.predict.segmenter_io import load_segmenter
from tools.core.checkpoint import load_checkpoint
from tools.core.errors import UserError
from tools.data.classes import NUM_CLASSES, class_id
from tools.core.logger import read_stats
from tools.train.seg_losses import SegmentationLoss, soft_dice_loss
from tools.data.frames import augment_batch, crop_corners, evenly_spread

HEIGHT, WIDTH = 32, 48  # not a multiple of 32 in width: exercises the padding
FRAMES = 22
COLORS = {class_id("cube", "rubber", "red"): (200, 30, 30), class_id("sphere", "metal", "blue"): (40, 70, 220),
          class_id("cylinder", "rubber", "yellow"): (250, 230, 50)}


def _write_video(folder: Path, rng: np.random.Generator, with_mask: bool) -> None:
    """22 frames of two coloured squares moving over a gray floor, and their mask."""
    folder.mkdir(parents=True)
    classes = rng.choice(list(COLORS), size=2, replace=False)
    starts = rng.integers(0, [HEIGHT - 10, WIDTH - 10], size=(2, 2))
    mask = np.zeros((FRAMES, HEIGHT, WIDTH), dtype=np.uint8)
    for t in range(FRAMES):
        image = np.full((HEIGHT, WIDTH, 3), 120, dtype=np.uint8)
        for cls, (row, col) in zip(classes, starts):
            col = (col + t) % (WIDTH - 10)
            image[row:row + 8, col:col + 8] = COLORS[int(cls)]
            mask[t, row:row + 8, col:col + 8] = cls
        Image.fromarray(image).save(folder / f"image_{t}.png")
    if with_mask:
        np.save(folder / "mask.npy", mask)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clevrer")
    rng = np.random.default_rng(0)
    for split, ids, labeled in (("train", [0, 1], True), ("val", [1000], True), ("unlabeled", [2000, 2001], False)):
        for video_id in ids:
            _write_video(root / split / f"video_{video_id}", rng, labeled)
    return root


def _segment_args(data: Path, results: Path, *mods: str) -> list[str]:
    return ["--exp", "segment", "--data", "CLEVRER", "--data_path", str(data), "--results_dir", str(results),
            "--pretrain_config", "configs/segmentation/tiny.yaml", "--config_mod",
            f"data.height={HEIGHT}", f"data.width={WIDTH}", "train.log_every=2", "train.val_every=2",
            "train.ckpt_every=2", "train.image_every=2", *mods]


@pytest.fixture(scope="module")
def trained_run(dataset, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    assert main.main(_segment_args(dataset, results, "train.max_steps=4")) == 0
    return results / "segment_main_CLEVRER_42"


@pytest.fixture(scope="module")
def net() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(arch="unet", encoder="resnet18", classes=NUM_CLASSES).eval()


@pytest.mark.parametrize("size", [(160, 240), (64, 96), (40, 60)])
def test_logits_shape_and_dtype(net, size):
    with torch.no_grad():
        logits = net.segment(torch.rand(2, 3, *size))
    assert logits.shape == (2, NUM_CLASSES, *size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_tta_is_flip_equivariant_and_size_option_keeps_resolution(net):
    rgb = torch.rand(1, 3, 40, 60)
    with torch.no_grad():
        scores = net.segment(rgb, tta=True)
        mirrored = net.segment(rgb.flip(-1), tta=True)
        resized = net.segment(rgb, size=(64, 96))
    assert scores.shape == (1, NUM_CLASSES, 40, 60)
    # Averaging over the flip makes the output of a mirrored frame the mirror of the output.
    assert torch.allclose(scores, mirrored.flip(-1), atol=1e-4)
    assert torch.allclose(scores.exp().sum(1), torch.ones(1, 40, 60), atol=1e-4)
    assert resized.shape == (1, NUM_CLASSES, 40, 60)


def test_dice_is_zero_for_perfect_prediction_and_ignores_unknown_pixels():
    target = torch.randint(0, 4, (2, 8, 8))
    perfect = 100.0 * torch.nn.functional.one_hot(target, NUM_CLASSES).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(perfect, target) < 1e-3
    wrong = perfect.roll(1, dims=1)
    assert soft_dice_loss(wrong, target) > 0.9
    hidden = target.clone()
    hidden[:, :4] = -1
    mixed = torch.cat([wrong[:, :, :4], perfect[:, :, 4:]], dim=2)
    assert soft_dice_loss(mixed, hidden) < 1e-3
    everything_unknown = torch.full_like(target, -1)
    total, parts = SegmentationLoss()(wrong.requires_grad_(), everything_unknown)
    assert total.item() == 0.0 and parts == {"ce": 0.0, "dice": 0.0}


TINY_NET = {"encoder_depth": 3, "decoder_channels": (32, 16, 8)}


def test_ce_dice_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = Segmenter(classes=NUM_CLASSES, **TINY_NET)
    rgb = torch.rand(2, 3, HEIGHT, WIDTH) * 0.3
    target = torch.zeros(2, HEIGHT, WIDTH, dtype=torch.long)
    target[:, 8:20, 10:30] = 5
    rgb[:, 0, 8:20, 10:30] = 0.9
    criterion = SegmentationLoss(1.0, 1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, _ = criterion(model(rgb), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_local_encoder_weights_are_loaded_and_mismatches_refused(tmp_path):
    import torchvision

    from tools.predict.segmenter_io import load_local_encoder_weights

    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = Segmenter(**TINY_NET)
    load_local_encoder_weights(model.net.encoder, path)
    assert torch.equal(model.net.encoder.layer2[0].conv1.weight, resnet.layer2[0].conv1.weight)
    assert not hasattr(model.net.encoder, "layer4")  # a depth-3 encoder keeps no unused stage
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match="does not fit the encoder"):
        load_local_encoder_weights(Segmenter(**TINY_NET).net.encoder, path)


def test_augmentation_flips_frame_and_mask_together():
    torch.manual_seed(3)
    rgb = torch.rand(8, 3, 6, 10)
    mask = (rgb[:, 0] > 0.5).long()
    flipped_rgb, flipped_mask = augment_batch(rgb, mask, {"hflip": True})
    assert torch.equal(flipped_mask, (flipped_rgb[:, 0] > 0.5).long())
    assert not torch.equal(flipped_rgb, rgb)  # with 8 frames some were flipped
    jittered, same_mask = augment_batch(rgb, mask, {"hflip": False, "brightness": 0.5, "contrast": 0.5,
                                                    "saturation": 0.5})
    assert torch.equal(same_mask, mask) and 0 <= jittered.min() and jittered.max() <= 1


def test_crops_keep_frame_and_mask_aligned_and_centre_on_objects():
    torch.manual_seed(4)
    rgb = torch.rand(6, 3, 40, 60)
    mask = torch.zeros(6, 40, 60, dtype=torch.long)
    mask[:, 30:34, 50:55] = 7  # one small object in a corner of every frame
    rgb[:, 0] = mask.float() / 7  # the red channel carries the mask, to check both are cut the same way
    cropped, cropped_mask = augment_batch(rgb, mask, {"hflip": True, "crop": [16, 24],
                                                      "crop_object_probability": 1.0})
    assert cropped.shape == (6, 3, 16, 24) and cropped_mask.shape == (6, 16, 24)
    assert torch.equal((cropped[:, 0] > 0.5).long() * 7, cropped_mask)
    assert bool((cropped_mask == 7).flatten(1).any(1).all())  # every crop holds the object
    corners = crop_corners(mask, (16, 24), object_probability=0.0)
    assert bool((corners[:, 0] <= 24).all() and (corners[:, 1] <= 36).all() and (corners >= 0).all())
    with pytest.raises(UserError, match="data.augment.crop"):
        augment_batch(rgb, mask, {"crop": [16]})


def test_evenly_spread():
    assert evenly_spread(5, None) == [0, 1, 2, 3, 4]
    assert evenly_spread(100, 3) == [0, 50, 99]


def test_segment_run_writes_checkpoints_and_val_jaccard(trained_run):
    assert (trained_run / "model_last.pth").is_file() and (trained_run / "model_best.pth").is_file()
    val = [r for r in read_stats(trained_run) if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4]
    assert all(0.0 <= r["jaccard"] <= 1.0 for r in val)
    best = load_checkpoint(trained_run / "model_best.pth")
    assert best["val_jaccard"] == pytest.approx(max(r["jaccard"] for r in val))
    assert any((trained_run / "tensorboard").iterdir())


def test_rerun_resumes_and_finished_run_is_not_retrained(dataset, trained_run):
    results = trained_run.parent
    last = trained_run / "model_last.pth"
    before = last.stat().st_mtime_ns
    assert main.main(_segment_args(dataset, results, "train.max_steps=4")) == 0
    assert last.stat().st_mtime_ns == before
    assert main.main(_segment_args(dataset, results, "train.max_steps=6")) == 0
    assert load_checkpoint(last)["step"] == 6
    train_steps = [r["step"] for r in read_stats(trained_run) if r["split"] == "train"]
    assert train_steps == [2, 4, 6]


def test_load_segmenter_uses_ema_weights(trained_run):
    state = load_checkpoint(trained_run / "model_best.pth")
    model = load_segmenter(trained_run / "model_best.pth")
    assert model.trained_size == (HEIGHT, WIDTH) and not model.training
    name = "net.segmentation_head.0.weight"
    assert torch.equal(dict(model.named_parameters())[name], state["ema"]["shadow"][name])
    assert not torch.equal(state["ema"]["shadow"][name], state["model"][name])


def test_pseudo_labels_have_mask_format_and_finished_videos_are_skipped(dataset, trained_run):
    args = _segment_args(dataset, trained_run.parent, "mode=pseudo_label")
    assert main.main(args) == 0
    out = trained_run / "pseudo_labels"
    masks = {vid: out / f"video_{vid}" / "mask.npy" for vid in (2000, 2001)}
    for path in masks.values():
        mask = np.load(path)
        assert mask.shape == (FRAMES, HEIGHT, WIDTH) and mask.dtype == np.uint8 and mask.max() < NUM_CLASSES
    kept = masks[2000].stat().st_mtime_ns
    masks[2001].unlink()
    assert main.main(args) == 0
    assert masks[2000].stat().st_mtime_ns == kept and masks[2001].is_file()
    assert not (dataset / "unlabeled" / "video_2000" / "mask.npy").exists()


def test_missing_data_path_is_a_user_error(tmp_path, capsys):
    code = main.main(["--exp", "segment", "--results_dir", str(tmp_path),
                      "--pretrain_config", "configs/segmentation/tiny.yaml"])
    assert code == main.EXIT_USER_ERROR and "--data_path" in capsys.readouterr().err
