"""`--exp predict`: the submission's shape, dtype and order; resuming skips finished videos; fusion options."""
import json

import torch
import main
from tests.conftest import make_segmenter_checkpoint
from tools.data.clevrer import list_videos


def _predict(data, results, run_id, ddpm, *mods):
    return main.main(["--exp", "predict", "--id", run_id, "--data_path", str(data), "--results_dir", str(results),
                      "--config_mod", f"predict.ddpm={ddpm}", "predict.n_samples=2", "predict.png_videos=1",
                      "predict.gif_videos=1", *mods])


def test_hidden_submission_shape_dtype_order(tiny_ddpm_checkpoint, synthetic_clevrer, tmp_path):
    assert _predict(synthetic_clevrer, tmp_path, "hidden", tiny_ddpm_checkpoint, "predict.split=hidden",
                    "predict.fusion=head") == 0
    out = tmp_path / "predict_hidden_CLEVRER_42"
    submission = torch.load(out / "submission.pt")
    assert submission.shape == (2, 160, 240) and submission.dtype == torch.uint8
    assert int(submission.max()) <= 48
    ids = json.loads((out / "video_ids.json").read_text())["video_ids"]
    assert ids == [e.id for e in list_videos(synthetic_clevrer, "hidden")] == sorted(ids)
    for video_id, mask in zip(ids, submission):
        saved = torch.load(out / "per_video" / f"video_{video_id}" / "result.pth")
        assert torch.equal(saved["mask"], mask)
    assert (out / "gifs" / f"video_{ids[0]}.gif").exists()
    assert (out / "per_video" / f"video_{ids[0]}" / "predicted_mask.png").exists()


def test_resume_skips_finished_videos(tiny_ddpm_checkpoint, synthetic_clevrer, tmp_path):
    assert _predict(synthetic_clevrer, tmp_path, "r", tiny_ddpm_checkpoint, "predict.max_videos=1",
                    "predict.fusion=head") == 0
    out = tmp_path / "predict_r_CLEVRER_42"
    first_id = list_videos(synthetic_clevrer, "val")[0].id
    first_result = out / "per_video" / f"video_{first_id}" / "result.pth"
    written = first_result.stat().st_mtime_ns
    assert _predict(synthetic_clevrer, tmp_path, "r", tiny_ddpm_checkpoint, "predict.fusion=head") == 0
    assert first_result.stat().st_mtime_ns == written, "a finished video was predicted again"
    assert torch.load(out / "submission.pt").shape == (2, 160, 240)
    assert json.loads((out / "meta.json").read_text())["videos"] == 2


def test_segmenter_fusion_and_missing_checkpoint(tiny_ddpm_checkpoint, synthetic_clevrer, tmp_path, capsys):
    seg_path = make_segmenter_checkpoint(tmp_path / "segmenter.pth")
    assert _predict(synthetic_clevrer, tmp_path, "seg", tiny_ddpm_checkpoint, f"predict.segmenter={seg_path}",
                    "predict.fusion=mean", "predict.tta=true") == 0
    assert torch.load(tmp_path / "predict_seg_CLEVRER_42" / "submission.pt").shape == (2, 160, 240)
    assert _predict(synthetic_clevrer, tmp_path, "none", tmp_path / "absent.pth") == main.EXIT_USER_ERROR
    assert "absent.pth" in capsys.readouterr().err
