"""The segmenter benchmark's choice of generated val videos (evals/benchmarks/segmenter.py)."""
import argparse

import pytest

from evals.benchmarks.segmenter import val_video_ids


def _args(val_path, val_videos=None) -> argparse.Namespace:
    return argparse.Namespace(val_path=str(val_path), val_videos=val_videos)


def test_val_videos_are_the_first_labeled_ones_of_the_val_split(synthetic_clevrer):
    every = val_video_ids(_args(synthetic_clevrer))
    assert len(every) == 2 and every == sorted(every)
    assert val_video_ids(_args(synthetic_clevrer, 1)) == every[:1]


def test_a_val_path_without_labeled_val_videos_is_refused_by_name(tmp_path):
    with pytest.raises(SystemExit, match="--val_path"):
        val_video_ids(_args(tmp_path))
    (tmp_path / "val" / "video_0").mkdir(parents=True)  # frames but no mask.npy: not labeled
    with pytest.raises(SystemExit, match="--val_path"):
        val_video_ids(_args(tmp_path))
