"""Diffusion math, training-frame sets and EMA: values checked against closed forms."""
import math

import pytest
import torch
from torch import nn

from tools.diffusion.gaussian import GaussianDiffusion, cosine_alphas_cumprod, linear_alphas_cumprod, measure_scale_factor
from tools.core.distributed import unwrap
from tools.train.ema import EMA
from tools.core.errors import UserError
from tools.diffusion.frame_sets import gather_frames, sample_frame_sets, sample_frame_sets_batch


@pytest.mark.parametrize("make", [cosine_alphas_cumprod, linear_alphas_cumprod])
def test_schedules_decrease_from_one_to_nearly_zero(make):
    abar = make(1000)
    assert abar.shape == (1000,) and abar.dtype == torch.float64
    assert (abar[1:] < abar[:-1]).all()
    assert 0.99 < abar[0] < 1.0 and abar[-1] < 1e-3


def test_schedules_match_their_published_formulas():
    abar = cosine_alphas_cumprod(1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abar[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)
    lin = linear_alphas_cumprod(1000)
    assert lin[0].item() == pytest.approx(1 - 1e-4) and lin[1].item() == pytest.approx((1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999)))


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_split_output_inverts_the_training_target(prediction):
    diffusion = GaussianDiffusion("cosine", 1000, prediction)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(8, 2, 3, generator=g), torch.randn(8, 2, 3, generator=g)
    t = torch.tensor([0, 1, 10, 100, 500, 900, 990, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    eps, x0_hat = diffusion.split_output(x_t, t, diffusion.target(x0, noise, t))
    assert torch.allclose(eps, noise, atol=1e-4)
    assert torch.allclose(x0_hat[:7], x0[:7], atol=1e-3)  # at t=999 x0 is barely identifiable in float32


def test_q_sample_has_the_forward_process_moments():
    diffusion = GaussianDiffusion("linear", 1000)
    x0 = torch.full((20000, 1), 2.0)
    t = torch.full((20000,), 300)
    x_t = diffusion.q_sample(x0, t, torch.randn(20000, 1, generator=torch.Generator().manual_seed(0)))
    abar = diffusion.alphas_cumprod[300].item()
    assert x_t.mean().item() == pytest.approx(2 * abar**0.5, abs=0.02)
    assert x_t.std().item() == pytest.approx((1 - abar) ** 0.5, abs=0.02)


def test_training_loss_is_deterministic_per_generator_and_zero_for_an_oracle():
    diffusion = GaussianDiffusion("cosine", 100, "v")
    x0 = torch.randn(6, 2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    a = diffusion.training_loss(zero, x0, torch.Generator().manual_seed(3))
    b = diffusion.training_loss(zero, x0, torch.Generator().manual_seed(3))
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert a[1].shape == (6,) and a[0].item() == pytest.approx(a[1].mean().item())
    assert ((a[2] >= 0) & (a[2] < 100)).all()

    def oracle(x_t, t):  # knows x0, so it can output the exact v
        abar = diffusion.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
        noise = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        return diffusion.target(x0, noise, t)

    assert diffusion.training_loss(oracle, x0, torch.Generator().manual_seed(3))[0].item() < 1e-6


def test_loss_by_bucket_groups_timesteps_by_quarter():
    diffusion = GaussianDiffusion("cosine", 1000)
    t = torch.tensor([0, 249, 250, 600, 999, 998])
    losses = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0, 11.0])
    assert diffusion.loss_by_bucket(t, losses) == {"loss_q0": 2.0, "loss_q1": 5.0, "loss_q2": 7.0, "loss_q3": 10.0}
    assert diffusion.loss_by_bucket(torch.tensor([10]), torch.tensor([4.0])) == {"loss_q0": 4.0}


def test_scale_factor_gives_unit_std_and_refuses_constant_latents():
    latents = 0.2 * torch.randn(10000, generator=torch.Generator().manual_seed(0))
    scale = measure_scale_factor(latents)
    assert (latents * scale).std().item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(UserError, match="first_model"):
        measure_scale_factor(torch.zeros(10))


def test_bad_config_values_are_user_errors():
    with pytest.raises(UserError, match="schedule"):
        GaussianDiffusion("quadratic")
    with pytest.raises(UserError, match="prediction"):
        GaussianDiffusion(prediction="x0")


# ---- training frame sets -------------------------------------------------------------------

def test_frame_sets_are_deterministic_and_well_formed():
    options = dict(n_frames=22, n_obs_max=11, n_tgt=3, prob_mask_cond=0.2, prob_mask_future=0.3,
                   prob_competition_case=0.3)
    a = sample_frame_sets_batch(torch.Generator().manual_seed(7), 200, **options)
    b = sample_frame_sets_batch(torch.Generator().manual_seed(7), 200, **options)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    obs_idx, tgt_idx, keep = a
    assert obs_idx.shape == (200, 11) and tgt_idx.shape == (200, 3) and keep.dtype == torch.bool
    for o, t, k in zip(obs_idx.tolist(), tgt_idx.tolist(), keep.tolist()):
        kept = [f for f, kk in zip(o, k) if kk]
        assert len(set(t)) == 3 and t == sorted(t) and max(t) < 22
        assert not set(kept) & set(t) and len(set(kept)) == len(kept)


def test_frame_set_probabilities_are_respected():
    draws = sample_frame_sets_batch(torch.Generator().manual_seed(0), 2000, n_frames=22, n_obs_max=11, n_tgt=1,
                                    prob_mask_cond=0.25, prob_mask_future=0.0, prob_competition_case=0.4)
    obs_idx, tgt_idx, keep = draws
    competition = (tgt_idx[:, 0] == 21) & (obs_idx == torch.arange(11)).all(dim=1)
    assert competition.float().mean().item() == pytest.approx(0.4, abs=0.04)
    assert (~keep.any(dim=1)).float().mean().item() == pytest.approx(0.25, abs=0.03)


def test_mask_future_keeps_only_frames_before_the_first_target():
    obs_idx, tgt_idx, keep = sample_frame_sets_batch(torch.Generator().manual_seed(1), 300, n_frames=22,
                                                     n_obs_max=11, n_tgt=2, prob_mask_future=1.0)
    for o, t, k in zip(obs_idx.tolist(), tgt_idx.tolist(), keep.tolist()):
        assert all(f < t[0] for f, kk in zip(o, k) if kk)


def test_competition_case_with_several_targets_ends_at_21():
    obs_idx, tgt_idx, keep = sample_frame_sets(torch.Generator().manual_seed(0), 22, 11, 4, prob_competition_case=1.0)
    assert obs_idx.tolist() == list(range(11)) and keep.all()
    assert tgt_idx[-1].item() == 21 and all(10 < f < 21 for f in tgt_idx[:-1].tolist())
    with pytest.raises(UserError, match="n_tgt"):
        sample_frame_sets(torch.Generator(), 22, 11, 22)


def test_gather_frames_picks_per_sample_indices():
    clips = torch.arange(2 * 5).float().view(2, 5, 1, 1, 1).expand(2, 5, 3, 2, 2)
    picked = gather_frames(clips, torch.tensor([[4, 0], [1, 1]]))
    assert picked.shape == (2, 2, 3, 2, 2)
    assert picked[:, :, 0, 0, 0].tolist() == [[4.0, 0.0], [6.0, 6.0]]


# ---- EMA -----------------------------------------------------------------------------------

def test_ema_follows_the_closed_form_average():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            model.weight.fill_(1.0)
        ema.update(model)
    # shadow_n = 0.9 shadow_{n-1} + 0.1 * 1, from 0: 1 - 0.9^3
    assert ema.shadow["weight"].item() == pytest.approx(1 - 0.9**3)
    ema.copy_to(model)
    assert model.weight.item() == pytest.approx(0.271)


def test_ema_averages_norm_statistics_and_copies_counters():
    model = nn.BatchNorm1d(1)
    ema = EMA(model, decay=0.9)  # its statistics start at the model's: mean 0
    for _ in range(3):
        with torch.no_grad():
            model.running_mean.fill_(1.0)
            model.num_batches_tracked += 1
        ema.update(model)
    assert ema.buffers["running_mean"].item() == pytest.approx(1 - 0.9**3)
    assert ema.buffers["num_batches_tracked"].item() == 3 and ema.buffers["num_batches_tracked"].dtype == torch.long


def test_ema_warmup_and_state_round_trip_through_a_wrapper():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1+0)/(10+0)
    wrapped = nn.DataParallel(model)  # stands in for DDP: both expose .module
    assert unwrap(wrapped) is model
    ema.update(wrapped)
    restored = EMA(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.n_updates == 1 and restored.decay == 0.999 and restored.warmup
    assert all(torch.equal(restored.shadow[k], v) for k, v in ema.shadow.items())
    with pytest.raises(UserError, match="EMA"):
        EMA(nn.Linear(3, 3)).load_state_dict(ema.state_dict())
