"""The GPU-memory count (evals/benchmarks/memory.py) on a tiny config: saved activations grow with the batch and the
trained parameters include the static prior's."""
from evals.benchmarks.memory import build_task, saved_activation_bytes, trained_parameters

TINY = ["data.height=16", "data.width=16", "data.frames=6", "data.cond_frames=3", "frames.n_frames=6",
        "frames.n_obs_max=3", "frames.n_tgt=3", "model.base_channels=8", "static_prior.base_channels=8"]


def test_activation_count_grows_with_the_batch():
    cfg, task = build_task("ddpm", "configs/latent-diffusion/video_cpu.yaml", "configs/autoencoder/video_cpu.yaml",
                           TINY)
    one, two, three = (saved_activation_bytes(task, cfg, batch) for batch in (1, 2, 3))
    assert 0 < one < two < three
    assert abs((three - two) - (two - one)) < 0.1 * (two - one), "activations grow linearly with the batch"
    assert trained_parameters(task) == (sum(p.numel() for p in task.model.parameters())
                                        + sum(p.numel() for p in task.prior.model.parameters()))
