"""evals/benchmarks/prediction.py end to end on the tiny synthetic dataset, on CPU, with tiny 1-step ddpm runs."""
import json
from pathlib import Path

import pytest

from evals.benchmarks import prediction as benchmark
from tests.conftest import make_first_stage_checkpoint as _first_stage_checkpoint
from tests.conftest import make_segmenter_checkpoint as tiny_segmenter_checkpoint
from tests.conftest import run_ddpm as _ddpm


@pytest.fixture(scope="module")
def tiny_runs(synthetic_clevrer, tmp_path_factory):
    """A latent and a pixel ddpm checkpoint (1 training step each) and an untrained segmenter."""
    results = tmp_path_factory.mktemp("bench_runs")
    first = _first_stage_checkpoint(results / "fs.pth")
    assert _ddpm(synthetic_clevrer, results, "latent", first, 1) == 0
    assert _ddpm(synthetic_clevrer, results, "pixel", "none", 1) == 0
    return {"latent": results / "ddpm_latent_CLEVRER_42" / "model_last.pth",
            "pixel": results / "ddpm_pixel_CLEVRER_42" / "model_last.pth",
            "segmenter": tiny_segmenter_checkpoint(results / "seg.pth")}


def test_benchmark_writes_its_table(synthetic_clevrer, tiny_runs, tmp_path, capsys):
    out = tmp_path / "bench" / "benchmark.md"
    code = benchmark.main(["--data_path", str(synthetic_clevrer), "--ddpm", str(tiny_runs["latent"]),
                           "--pixel_ddpm", str(tiny_runs["pixel"]), "--segmenter", str(tiny_runs["segmenter"]),
                           "--strategies", "direct", "skip", "--max_videos", "2", "--n_samples", "2",
                           "--sample_steps", "2", "--fvd", "--device", "cpu", "--out", str(out)])
    assert code == 0
    markdown = out.read_text()
    assert markdown in capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    rows = {row["label"]: row for row in record["rows"]}
    assert set(rows) == {"grid latent direct", "grid latent skip", "pixel (MCVD-style)"}
    for row in rows.values():
        assert 0.0 <= row["jaccard"] <= 1.0 and 0.0 <= row["lpips"] and row["ssim"] <= 1.0
        assert row["fvd"] is not None and row["fvd"] >= 0
        assert row["meta"]["sec_per_video"] > 0 and row["meta"]["peak_mem_gib"] > 0
        assert row["train_sec_per_step"] > 0 and row["resolution"] == [32, 48]
    assert rows["grid latent skip"]["meta"]["strategy"] == "skip"
    assert set(record["baselines"]) == {"copy_frame11_truth", "copy_frame11_segmenter",
                                        "copy_frame11_segmenter_suppressed", "segment_true_frame22",
                                        "constant_velocity_truth", "damped_velocity_truth", "friction_velocity_truth",
                                        "true_displacement_truth", "friction_segmenter"}
    assert record["context"]["num_videos"] == 2
    assert "| grid latent skip | skip x2 |" in markdown and "copy frame 11 (true masks)" in markdown
    assert (out.parent / "fvd_cache").is_dir()


def test_benchmark_refuses_bad_inputs(synthetic_clevrer, tiny_runs, tmp_path, capsys):
    common = ["--data_path", str(synthetic_clevrer), "--out", str(tmp_path / "b.md"), "--device", "cpu"]
    assert benchmark.main([*common, "--ddpm", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth' does not exist" in capsys.readouterr().err
    assert benchmark.main([*common, "--ddpm", str(tiny_runs["latent"]), "--pixel_ddpm", str(tiny_runs["pixel"])]) == 2
    assert "--pixel_ddpm needs --segmenter" in capsys.readouterr().err
    assert benchmark.main([*common, "--ddpm", str(tiny_runs["latent"]), "--split", "unlabeled"]) == 2
    assert "no true frame-22 masks" in capsys.readouterr().err
    assert not (tmp_path / "b.md").exists()


def test_eval_reads_what_predict_writes(synthetic_clevrer, tiny_runs, tmp_path):
    """--exp predict then --exp eval without --data_path (taken from the predict run's config.yaml)."""
    import main

    assert main.main(["--exp", "predict", "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path),
                      "--device", "cpu", "--config_mod", f"predict.ddpm={tiny_runs['latent']}",
                      "predict.max_videos=2", "predict.n_samples=1", "predict.sample_steps=2",
                      "predict.png_videos=0", "predict.gif_videos=0"]) == 0
    assert main.main(["--exp", "eval", "--results_dir", str(tmp_path), "--device", "cpu", "--config_mod",
                      f"eval.predictions={tmp_path / 'predict_main_CLEVRER_42'}", "eval.metrics=[jaccard,lpips]"]) == 0
    report = json.loads((tmp_path / "eval_main_CLEVRER_42" / "eval.json").read_text())
    assert report["split"] == "val" and report["num_videos"] == 2
    assert 0.0 <= report["jaccard"]["score"] <= 1.0 and report["frame22"]["resolution"] == [32, 48]
    assert "copy_frame11_truth" in report["baselines"]


def test_benchmark_scores_the_slot_rows(synthetic_clevrer, tiny_runs, tmp_path):
    """The slot route's rows: the dynamics alone from true masks, the motion head's guess, and end to end from the
    segmenter's masks named by the object classifier; beside them the friction rule on those segmenter masks."""
    import main
    from tests.test_object_classifier import _objects_args

    configs = Path(__file__).resolve().parents[1] / "configs"
    first = ["data.height=40", "data.width=60", "train.log_every=1", "train.val_clips=1", "train.batch_size=2"]
    common = ["--id", "b", "--data_path", str(synthetic_clevrer), "--results_dir", str(tmp_path)]
    assert main.main(["--exp", "first_stage", *common, "--pretrain_config", str(configs / "autoencoder/slots.yaml"),
                      "--config_mod", *first, "train.max_steps=1", "train.val_every=1", "train.ckpt_every=1",
                      "model.template_size=8"]) == 0
    assert main.main(["--exp", "ddpm", *common, "--pretrain_config", str(configs / "latent-diffusion/slots.yaml"),
                      "--first_model", str(tmp_path / "first_stage_b_CLEVRER_42" / "model_last.pth"), "--config_mod",
                      *first, "model.width=32", "model.depth=1", "model.heads=2", "train.sample_every=2",
                      "train.ckpt_every=2", "train.scale_batches=1", "diffusion.sample_steps=2", "frames.n_tgt=1",
                      "train.max_steps=2", "train.motion_warmup_steps=1"]) == 0
    assert main.main(_objects_args(synthetic_clevrer, tmp_path, "train.max_steps=2")) == 0
    classifier = tmp_path / "objects_main_CLEVRER_42" / "model_last.pth"
    out = tmp_path / "bench" / "slots.md"
    assert benchmark.main(["--data_path", str(synthetic_clevrer), "--slot_ddpm",
                           str(tmp_path / "ddpm_b_CLEVRER_42" / "model_last.pth"), "--segmenter",
                           str(tiny_runs["segmenter"]), "--object_classifier", str(classifier), "--max_videos", "2",
                           "--n_samples", "2", "--sample_steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    rows = {row["label"]: row for row in record["rows"]}
    assert set(rows) == {"slots, true masks of frames 1-11",
                         "slots, true masks, the motion head's guess alone (no diffusion)",
                         "slots, segmenter + object classifier masks of frames 1-11"}
    for row in rows.values():
        assert 0.0 <= row["jaccard"] <= 1.0 and row["meta"]["route"] == "slots" and row["meta"]["videos"] == 2
    assert rows["slots, segmenter + object classifier masks of frames 1-11"]["meta"]["object_classifier"] == str(classifier)
    assert rows["slots, true masks of frames 1-11"]["meta"]["observed_masks"] == "true"
    assert 0.0 <= record["baselines"]["friction_segmenter"] <= 1.0
    assert "friction rule (segmenter masks" in out.read_text()
