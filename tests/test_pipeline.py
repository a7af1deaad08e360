"""`--exp pipeline` end to end on the tiny synthetic dataset with a seconds-sized config: it trains every
stage, predicts the val split and writes report.md with the model's and the baselines' frame-22 Jaccard."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torchmetrics import JaccardIndex

import main
from tools.pipeline.run import apply_profile
from tests.conftest import TINY_DDPM

FAST = {
    "segment": ["data.height=32", "data.width=48", "train.max_steps=2", "train.log_every=1", "train.val_every=2",
                "train.image_every=2", "train.ckpt_every=2", "data.val_frames=4"],
    "first_stage": ["data.height=32", "data.width=48", "model.channels=8", "train.max_steps=2", "train.log_every=1",
                    "train.val_every=2", "train.image_every=2", "train.ckpt_every=2", "train.batch_size=1",
                    "train.val_clips=1", "loss.lpips_frames=1", "data.unlabeled_splits=[]"],
    "ddpm": [*TINY_DDPM, "train.max_steps=2", "train.batch_size=2", "data.unlabeled_splits=[]"],
    "objects": ["model.channels=[8,16]", "train.max_steps=2", "train.batch_size=8", "train.log_every=1",
                "train.val_every=2", "train.ckpt_every=2"],
    "predict": ["predict.n_samples=2", "predict.sample_steps=2", "predict.png_videos=1", "predict.gif_videos=1"],
    "slot_first_stage": ["data.height=32", "data.width=48", "model.template_size=8", "train.max_steps=1",
                         "train.log_every=1", "train.val_every=1", "train.ckpt_every=1", "train.val_clips=1"],
    "slot_ddpm": ["data.height=32", "data.width=48", "model.width=32", "model.depth=1", "model.context_depth=1",
                  "model.heads=2", "train.max_steps=2", "train.motion_warmup_steps=1", "train.log_every=1",
                  "train.sample_every=2", "train.ckpt_every=2", "train.batch_size=2", "train.scale_batches=1",
                  "train.val_clips=1", "diffusion.sample_steps=2"],
}
MODEL_ROW = {"slots": "slot diffusion, segmenter masks of frames 1-11", "grid": "grid-latent diffusion model"}


@pytest.mark.parametrize("route", ["slots", "grid"])
def test_pipeline_writes_report_with_model_and_baselines(synthetic_clevrer, tmp_path, route, capsys):
    cfg = OmegaConf.load("configs/quickstart/pipeline.yaml")
    cfg.pipeline.route = route
    cfg.pipeline.trajectories.data_path = str(synthetic_clevrer)  # already holds labeled trajectories
    for step, overrides in FAST.items():
        cfg.pipeline[step].overrides = overrides
    config_path = tmp_path / "pipeline.yaml"
    OmegaConf.save(cfg, config_path)
    args = ["--exp", "pipeline", "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path / "results"),
            "--pretrain_config", str(config_path)]
    assert main.main(args) == 0
    run_dir = tmp_path / "results" / "pipeline_main_CLEVRER_42"
    report = (run_dir / "report.md").read_text()
    rows = [MODEL_ROW[route], "copy frame 11 (true masks)", "segment the true frame 22"]
    if route == "slots":
        rows += ["slot diffusion, true masks of frames 1-11", "segmenter + object classifier in the instance vote",
                 "the motion head's guess alone, true masks of frames 1-11",
                 "copy frame 11 (segmenter masks, instance vote with the object classifier"]
        assert "| object classifier |" in report
    for row in rows:
        assert re.search(rf"\| {re.escape(row)}[^|]* \| [01]\.\d{{4}} \|", report), row
    assert (run_dir / "figure.png").stat().st_size > 0
    _assert_report_scores_are_recomputable(report, synthetic_clevrer, tmp_path / "results", MODEL_ROW[route])
    for stage in ["segment", "first_stage", "ddpm", "predict"] + (["objects"] if route == "slots" else []):
        assert (tmp_path / "results" / f"{stage}_pipeline_main_CLEVRER_42").is_dir()
    if route == "slots":  # the prediction used the object classifier the pipeline trained
        meta = json.loads((tmp_path / "results" / "predict_pipeline_main_CLEVRER_42" / "meta.json").read_text())
        assert meta["object_classifier"].endswith("objects_pipeline_main_CLEVRER_42/model_last.pth")
        _assert_hidden_submission(run_dir, synthetic_clevrer, meta)
        pseudo = tmp_path / "results" / "segment_pipeline_main_pseudo_labels_CLEVRER_42" / "pseudo_labels"
        assert len(list(pseudo.glob("video_*/mask.npy"))) == 2  # the 2 unlabeled videos, frames 1-22
        assert re.search(r"\| 2 videos, used by stage 2 .* the same procedure on the val videos: [01]\.\d{4} per frame \|",
                         report)
        assert re.search(rf"stage-2 trajectories: \d+ \(.*2 from {re.escape(str(pseudo))}", capsys.readouterr().out)
    assert main.main(args) == 0, "a re-run resumes every finished stage and rewrites the report"


def _assert_hidden_submission(run_dir: Path, data: Path, val_meta: dict) -> None:
    """submission.pt of the hidden split beside the report: (N, 160, 240) uint8 class ids, natural id order,
    predicted with the val row's settings."""
    submission = torch.load(run_dir / "submission.pt", weights_only=True)
    ids = json.loads((run_dir / "submission_ids.json").read_text())
    hidden_ids = sorted(int(p.name.split("_")[1]) for p in (data / "hidden").iterdir())
    assert ids == {"split": "hidden", "video_ids": hidden_ids}
    assert submission.dtype == torch.uint8 and tuple(submission.shape) == (len(hidden_ids), 160, 240)
    assert int(submission.max()) < 49
    hidden_meta = json.loads((run_dir.parent / "predict_pipeline_main_predict_hidden_CLEVRER_42" / "meta.json")
                             .read_text())
    assert {k: v for k, v in hidden_meta.items() if k not in ("split", "videos", "sec_per_video", "peak_mem_gib")} \
        == {k: v for k, v in val_meta.items() if k not in ("split", "videos", "sec_per_video", "peak_mem_gib")}


def _report_value(report: str, row: str) -> float:
    return float(re.search(rf"\| {re.escape(row)}[^|]* \| ([01]\.\d{{4}}) \|", report).group(1))


def _assert_report_scores_are_recomputable(report: str, data: Path, results: Path, model_row: str) -> None:
    """The report's Jaccard rows, recomputed here from submission.pt and the true masks with torchmetrics."""
    predict_dir = results / "predict_pipeline_main_CLEVRER_42"
    submission = torch.load(predict_dir / "submission.pt")
    ids = json.loads((predict_dir / "video_ids.json").read_text())["video_ids"]
    masks = torch.stack([torch.from_numpy(np.load(data / "val" / f"video_{i}" / "mask.npy")).long() for i in ids])
    assert len(ids) == len(submission) > 1

    def jaccard(pred: torch.Tensor) -> float:
        metric = JaccardIndex(task="multiclass", num_classes=49)
        metric.update(pred.long(), masks[:, 21])
        return float(metric.compute())

    assert _report_value(report, model_row) == pytest.approx(jaccard(submission), abs=5e-5)
    assert _report_value(report, "copy frame 11 (true masks)") == pytest.approx(jaccard(masks[:, 10]), abs=5e-5)


def test_every_shipped_step_override_fits_its_config():
    """The quick start's own overrides are type-checked against each step's config, as a run would do."""
    from tools.pipeline.steps import step_config

    cfg = OmegaConf.load("configs/quickstart/pipeline.yaml")
    cfg.run = {"exp": "pipeline", "id": "main", "seed": 42, "data": "CLEVRER", "data_path": None}
    steps = [name for name, section in cfg.pipeline.items() if OmegaConf.is_dict(section) and "config" in section]
    assert {"segment", "objects", "slot_ddpm", "predict"} <= set(steps)
    for step in steps:
        step_config(cfg, step)  # raises UserError on an override of the wrong type or an unknown key
    cfg.pipeline.profile = "gpu"
    assert apply_profile(cfg) == "gpu"
    assert cfg.pipeline.segment.config == "configs/segmentation/base.yaml"  # full resolution
    for step in steps:
        step_config(cfg, step)


@pytest.mark.parametrize("layout", ["typo", "train_only", "empty_val"])
def test_a_data_path_that_is_not_a_dataset_is_refused_and_nothing_is_written(tmp_path, capsys, layout):
    data = tmp_path / "mine"
    if layout != "typo":
        (data / "train" / "video_0").mkdir(parents=True)
    if layout == "empty_val":
        (data / "val").mkdir()
    before = sorted(tmp_path.rglob("*"))
    code = main.main(["--exp", "pipeline", "--data_path", str(data), "--results_dir", str(tmp_path / "results")])
    assert code == 2
    assert sorted(tmp_path.rglob("*")) == before  # neither the folder nor results/ got anything
    error = capsys.readouterr().err
    assert "is not a competition dataset" in error and str(data) in error


def test_stage_table_shows_the_last_val_figures_of_the_weights_prediction_uses():
    from tools.pipeline.report import stage_lines

    stats = {"segment": [{"split": "val", "jaccard": 0.6}, {"split": "train", "loss": 1.0},
                         {"split": "val", "jaccard": 0.5}],
             "objects": [{"split": "val", "accuracy": 0.97}, {"split": "val", "accuracy": 0.95}],
             "first_stage": [{"split": "val", "frame22_true_state_jaccard": 0.8}],
             "ddpm": [{"split": "train", "loss": 0.7}, {"split": "val", "frame22_jaccard": 0.45}]}
    lines = "\n".join(stage_lines("slots", stats, {}, {"sec_per_video": 1.0}))
    assert "last val Jaccard per frame (argmax) 0.5000" in lines and "0.6000" not in lines
    assert "last val accuracy per object crop (shape, material and colour right) 0.9500" in lines
    assert "0.9700" not in lines
