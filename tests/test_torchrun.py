"""`torchrun --nproc_per_node=2` (gloo on CPU) through main.py: one checkpoint written by rank 0 holding each
rank's own RNG state, and a resumed 2-process run equal bit for bit to an uninterrupted one."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import TINY_DDPM
from tests.test_resume_exact import assert_bitwise_equal
from tools.core.checkpoint import load_checkpoint
from tools.core.logger import read_stats

REPO = Path(__file__).resolve().parents[1]


def _torchrun_ddpm(data: Path, results: Path, run_id: str, steps: int) -> Path:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "main.py",
               "--exp", "ddpm", "--id", run_id, "--pretrain_config", "configs/latent-diffusion/tiny.yaml",
               "--data_path", str(data), "--results_dir", str(results), "--first_model", "none", "--device", "cpu",
               "--batch_size", "1", "--config_mod", f"train.max_steps={steps}", *TINY_DDPM, "train.ckpt_every=3",
               "data.height=16", "data.width=24", "data.unlabeled_splits=[]"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return results / f"ddpm_{run_id}_CLEVRER_42"


def test_two_processes_one_checkpoint_per_rank_rng_and_exact_resume(synthetic_clevrer, tmp_path):
    straight = _torchrun_ddpm(synthetic_clevrer, tmp_path, "straight", 3)
    split = _torchrun_ddpm(synthetic_clevrer, tmp_path, "split", 2)
    first = load_checkpoint(split / "model_last.pth")
    assert first["step"] == 2 and first["world_size"] == 2 and len(first["rng"]) == 2
    assert not torch.equal(first["rng"][0]["torch"], first["rng"][1]["torch"]), "each rank has its own stream"
    assert sorted(p.name for p in split.glob("*.pth")) == ["model_last.pth"]
    assert not (split / ".lock").exists()
    _torchrun_ddpm(synthetic_clevrer, tmp_path, "split", 3)
    one, two = load_checkpoint(straight / "model_last.pth"), load_checkpoint(split / "model_last.pth")
    for state in (one, two):
        state.pop("config"), state.pop("first_stage"), state.pop("trained_seconds")  # wall time differs
    assert_bitwise_equal(one, two)
    assert [r["step"] for r in read_stats(split) if r["split"] == "train"] == [1, 2, 3], "rank 0 logs each step once"
