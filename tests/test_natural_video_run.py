"""Natural video end to end on a tiny UCF-101 layout (.avi files and split lists written here): stage 1, its GAN
finetune and stage 2 run through image-log, validation and checkpoint steps and resume; one checkpoint samples
every mode; the samples stream to shards and mp4 and are scored.

(Before this suite existed, stage 1 died at its first image log with KeyError 'has_mask' on such a folder.)
"""
import json
import shutil

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main
from tests.video_fixtures import write_ucf_layout
from tools.core.checkpoint import load_checkpoint
from tools.core.logger import read_stats
from tools.core.media import read_mp4
from tools.diffusion.video_plans import plan_video
from tools.predict.video_predictor import VideoPredictor

CLIP = ["data.height=32", "data.width=32", "data.frames=8", "data.cond_frames=4", "data.clip_step=8",
        "data.test_clip_step=8", "data.frame_stride=2", "train.val_clips=2", "train.log_every=1", "train.ckpt_every=2"]
FIRST = CLIP + ["model.channels=8", "train.val_every=2", "train.image_every=2", "loss.lpips_frames=1",
                "model.grad_checkpoint=false", "train.num_workers=0"]
SECOND = CLIP + ["frames.n_frames=8", "frames.n_obs_max=4", "frames.n_tgt=4", "model.base_channels=16",
                 "static_prior.base_channels=16", "train.sample_every=2", "diffusion.sample_steps=2",
                 "train.num_workers=0"]


def _run(exp, config, results, data, run_id, steps, mods, *extra):
    return main.main(["--exp", exp, "--id", run_id, "--pretrain_config", config, "--data", "UCF101", "--data_path",
                      str(data), "--results_dir", str(results), "--batch_size", "2", *extra,
                      "--config_mod", f"train.max_steps={steps}", *mods])


def _train_steps(run_dir):
    return [r["step"] for r in read_stats(run_dir) if r["split"] == "train"]


def _tags(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events.Tags()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = write_ucf_layout(tmp_path_factory.mktemp("ucf"), n_frames=24, height=36, width=48)
    results = tmp_path_factory.mktemp("results")
    ucf, gan, cpu_ddpm = ("configs/autoencoder/ucf101.yaml", "configs/autoencoder/ucf101_gan.yaml",
                          "configs/latent-diffusion/video_cpu.yaml")
    for steps in (2, 4):  # the second command resumes
        assert _run("first_stage", ucf, results, data, "main", steps, FIRST) == 0
    first = results / "first_stage_main_UCF101_42"
    for steps in (2, 3):
        assert _run("first_stage", gan, results, data, "gan", steps, FIRST + ["loss.gan.channels=8"],
                    "--first_stage_folder", str(first)) == 0
    gan_run = results / "first_stage_gan_UCF101_42"
    for steps in (2, 4):
        assert _run("ddpm", cpu_ddpm, results, data, "main", steps, SECOND, "--first_model",
                    str(gan_run / "model_last.pth")) == 0
    return data, results, first, gan_run, results / "ddpm_main_UCF101_42"


def test_stage_one_runs_past_every_periodic_step_and_resumes(trained):
    _, _, first, gan_run, _ = trained
    assert _train_steps(first) == [1, 2, 3, 4], "the second command continues at step 3"
    assert load_checkpoint(first / "model_last.pth")["step"] == 4
    val = [r for r in read_stats(first) if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4] and all(r["recon_psnr"] > 0 and "recon_mask_iou" not in r for r in val)
    tags = _tags(first)
    assert {"first_stage/reconstruction", "first_stage/reconstruction_video"} <= set(tags["images"])
    assert _train_steps(gan_run) == [1, 2, 3] and all(r["d_loss"] > 0 for r in read_stats(gan_run)
                                                      if r["split"] == "train")


def test_stage_two_validates_generates_and_resumes(trained):
    *_, ddpm = trained
    assert _train_steps(ddpm) == [1, 2, 3, 4]
    records = read_stats(ddpm)
    assert all(r["prior_loss"] > 0 for r in records if r["split"] == "train"), "the static prior trains beside"
    assert [r["step"] for r in records if r["split"] == "val"] == [2, 4]
    assert {"ddpm/prediction_truth_vs_sample", "ddpm/generated"} <= set(_tags(ddpm)["images"])
    state = load_checkpoint(ddpm / "model_last.pth")
    assert state["step"] == 4 and "static_prior" in state and state["static_prior"]["ema"]


def test_generate_mode_shapes_range_and_long_videos(trained):
    *_, ddpm = trained
    predictor = VideoPredictor.from_checkpoint(str(ddpm / "model_last.pth"), torch.device("cpu"))
    for length in (8, 13):  # the training clip length, and past it (positions relative to each step's window)
        plan = plan_video([], range(length), 8, 4, 4)
        videos = predictor.sample_video(None, [], list(range(length)), plan, torch.Generator().manual_seed(0),
                                        batch=2)
        assert videos.shape == (2, length, 3, 32, 32) and videos.dtype == torch.float32
        assert torch.isfinite(videos).all() and videos.abs().max() <= 1.0
    again = predictor.sample_video(None, [], list(range(13)), plan, torch.Generator().manual_seed(0), batch=2)
    assert torch.equal(videos, again), "deterministic per seed"


def _sample(trained, run_id, mode, n=5, *mods):
    data, results, *_, ddpm = trained
    return main.main(["--exp", "sample", "--id", run_id, "--data", "UCF101", "--data_path", str(data),
                      "--results_dir", str(results), "--config_mod", f"sample.ddpm={ddpm / 'model_last.pth'}",
                      f"sample.mode={mode}", f"sample.n={n}", "sample.batch_size=2", "sample.mp4=2", "sample.grid=3",
                      "sample.n_frames=10", *mods])


def test_sample_streams_shards_resumes_and_writes_files(trained):
    results = trained[1]
    assert _sample(trained, "pred", "predict") == 0
    folder = results / "sample_pred_UCF101_42"
    info = json.loads((folder / "sample.json").read_text())
    assert info["mode"] == "predict" and info["n"] == 5 and info["written"] == 5 and info["steps"] == 2
    assert info["observed"] == [0, 1, 2, 3] and info["generated"] == list(range(4, 10)) and info["seed"] == 42
    shards = sorted((folder / "shards").glob("fake_*.pt"))
    assert len(shards) == 3 and sum(len(torch.load(p)) for p in shards) == 5
    last = torch.load(shards[-1])
    real = torch.load(folder / "shards" / "real_00002.pt")
    assert last.dtype == torch.uint8 and last.shape == (1, 10, 3, 32, 32)
    assert torch.equal(last[:, :4], real[:, :4]), "observed frames are the real ones"
    assert read_mp4(folder / "videos" / "video_00001.mp4").shape == (10, 32, 32, 3)
    assert (folder / "grid.gif").is_file() and (folder / "grid.png").is_file()
    shards[-1].unlink()  # an interrupted run: the last shard never finished
    shards[-1].with_suffix(".json").unlink()
    assert _sample(trained, "pred", "predict") == 0
    assert torch.equal(torch.load(shards[-1]), last), "the resumed shard is the one an uninterrupted run writes"


def test_video_eval_table_with_baseline_and_curves(trained, tmp_path):
    from evals.eval_video import main as eval_main

    results = trained[1]
    assert _sample(trained, "pred", "predict") == 0  # done already when the test above ran: resumes at once
    assert _sample(trained, "interp", "interpolate", 2) == 0
    assert _sample(trained, "gen", "generate", 2) == 0
    out = tmp_path / "eval"
    folders = [str(results / f"sample_{name}_UCF101_42") for name in ("pred", "interp", "gen")]
    assert eval_main(folders + ["--out", str(out), "--cache_dir", str(tmp_path / "cache"), "--real_clips", "3"]) == 0
    rows = {r["name"]: r for r in json.loads((out / "eval_video.json").read_text())}
    assert set(rows) == {"sample_pred_UCF101_42", "copy last observed frame", "sample_interp_UCF101_42",
                         "copy nearest observed frame", "sample_gen_UCF101_42"}
    pred = rows["sample_pred_UCF101_42"]
    assert pred["n"] == 5 and np.isfinite(pred["fvd"]) and pred["fvd"] >= 0
    assert len(pred["curves"]["lpips"]) == 6 and 0 <= pred["lpips"] <= 1 and pred["psnr"] > 0
    assert rows["copy last observed frame"]["psnr"] > pred["psnr"], "untrained samples are worse than copying"
    assert "lpips" not in rows["sample_gen_UCF101_42"] and list((tmp_path / "cache").glob("UCF101-*-test-10f-32x32-n2.npz")), "2 test clips"
    text = (out / "eval_video.md").read_text()
    assert "| copy last observed frame | predict | 5 | 10 |" in text and "LPIPS per generated frame" in text
    shutil.rmtree(results / "sample_gen_UCF101_42" / "shards")
    assert eval_main(folders + ["--out", str(out)]) == main.EXIT_USER_ERROR, "a folder missing its shards is refused"
