"""Samplers against exact denoisers of toy distributions whose optimal predictions are known."""
import pytest
import torch

from tools.diffusion.gaussian import GaussianDiffusion
from tools.diffusion.precond import Precond, guided
from tools.diffusion.samplers import ddim_sample, ddpm_sample, respaced_timesteps

MU, STD = 1.5, 0.5  # toy data x0 ~ N(MU, STD^2), per coordinate
N_SAMPLES = 4000


def as_x0(raw, schedule: GaussianDiffusion):
    """What the samplers take, denoise(x_t, t) -> x0, from an exact parameterised (eps or v) output."""
    return lambda x, t: schedule.split_output(x, t, raw(x, t))[1]


def exact_gaussian_denoiser(schedule: GaussianDiffusion):
    """Bayes-optimal denoiser (x_t, t) -> x0 for x0 ~ N(MU, STD^2), through the schedule's parameterisation.

    x_t ~ N(sqrt(a) MU, V) with V = a STD^2 + 1 - a, so
    E[eps | x_t] = sqrt(1-a) (x_t - sqrt(a) MU) / V and E[x0 | x_t] = MU + sqrt(a) STD^2 (x_t - sqrt(a) MU) / V;
    v = sqrt(a) eps - sqrt(1-a) x0 is linear, so E[v | x_t] follows from both.
    """
    def denoise(x, t):
        a = schedule.alphas_cumprod[t].float().view(-1, *([1] * (x.dim() - 1)))
        var = a * STD**2 + 1 - a
        centred = x - a.sqrt() * MU
        eps = (1 - a).sqrt() * centred / var
        if schedule.prediction == "eps":
            return eps
        x0 = MU + a.sqrt() * STD**2 * centred / var
        return a.sqrt() * eps - (1 - a).sqrt() * x0
    return as_x0(denoise, schedule)


def exact_mixture_denoiser(schedule: GaussianDiffusion, centre: float = 1.0, std: float = 0.1):
    """Optimal eps for the two-point-like mixture 0.5 N(-c, s^2) + 0.5 N(c, s^2)."""
    def denoise(x, t):
        a = schedule.alphas_cumprod[t].float().view(-1, *([1] * (x.dim() - 1)))
        var = a * std**2 + 1 - a
        log_w_pos = -((x - a.sqrt() * centre) ** 2) / (2 * var)
        log_w_neg = -((x + a.sqrt() * centre) ** 2) / (2 * var)
        w_pos = torch.sigmoid(log_w_pos - log_w_neg)
        mean_t = a.sqrt() * centre * (2 * w_pos - 1)
        return (1 - a).sqrt() * (x - mean_t) / var
    return as_x0(denoise, schedule)


def _x_T(seed: int = 0) -> torch.Tensor:
    return torch.randn(N_SAMPLES, 1, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("schedule_name", ["cosine", "linear"])
def test_ddim_and_ddpm_sample_the_toy_gaussian(prediction, schedule_name):
    schedule = GaussianDiffusion(schedule_name, 1000, prediction)
    denoise = exact_gaussian_denoiser(schedule)
    runs = {
        "ddim_eta0": ddim_sample(denoise, _x_T(), schedule, steps=100, eta=0.0),
        "ddim_eta1": ddim_sample(denoise, _x_T(), schedule, 100, 1.0, torch.Generator().manual_seed(1)),
        "ddpm": ddpm_sample(denoise, _x_T(), schedule, steps=100, generator=torch.Generator().manual_seed(1)),
    }
    for name, x in runs.items():
        # standard error of the mean is 0.5/sqrt(4000) = 0.008; of the std about 0.006
        assert abs(x.mean().item() - MU) < 0.04, name
        assert abs(x.std().item() - STD) < 0.04, name


def test_samplers_recover_a_bimodal_mixture():
    schedule = GaussianDiffusion("cosine", 1000, "eps")
    denoise = exact_mixture_denoiser(schedule)
    for x in (ddim_sample(denoise, _x_T(), schedule, steps=100, eta=0.0),
              ddpm_sample(denoise, _x_T(), schedule, steps=200, generator=torch.Generator().manual_seed(2))):
        assert abs((x > 0).float().mean().item() - 0.5) < 0.04
        assert abs(x.abs().mean().item() - 1.0) < 0.05
        assert (x.abs() - 1.0).abs().median().item() < 0.15  # mass sits near the two modes, not between


def test_eps_and_v_parameterisations_give_the_same_samples():
    outputs = []
    for prediction in ("eps", "v"):
        schedule = GaussianDiffusion("cosine", 1000, prediction)
        outputs.append(ddim_sample(exact_gaussian_denoiser(schedule), _x_T(), schedule, steps=50, eta=0.0))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-3)


def test_ddim_eta0_is_deterministic_and_ignores_the_generator():
    schedule = GaussianDiffusion("cosine", 1000, "eps")
    denoise = exact_mixture_denoiser(schedule)
    a = ddim_sample(denoise, _x_T(3), schedule, 20, 0.0, torch.Generator().manual_seed(0))
    b = ddim_sample(denoise, _x_T(3), schedule, 20, 0.0, torch.Generator().manual_seed(99))
    c = ddim_sample(denoise, _x_T(4), schedule, 20, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_stochastic_samplers_are_deterministic_per_seed():
    schedule = GaussianDiffusion("cosine", 1000, "eps")
    denoise = exact_gaussian_denoiser(schedule)
    for sampler in (lambda g: ddpm_sample(denoise, _x_T(), schedule, 20, g),
                    lambda g: ddim_sample(denoise, _x_T(), schedule, 20, 0.5, g)):
        assert torch.equal(sampler(torch.Generator().manual_seed(5)), sampler(torch.Generator().manual_seed(5)))
        assert not torch.equal(sampler(torch.Generator().manual_seed(5)), sampler(torch.Generator().manual_seed(6)))


def test_respaced_timesteps_are_descending_and_span_the_chain():
    assert respaced_timesteps(10, None) == list(range(9, -1, -1))
    assert respaced_timesteps(1000, 1) == [999]  # one step denoises pure noise: the noisiest timestep
    times = respaced_timesteps(1000, 50)
    assert len(times) == 50 and times[0] == 999 and times[-1] == 0
    assert all(a > b for a, b in zip(times, times[1:]))


def test_guidance_combines_conditional_and_unconditional_predictions():
    def denoised(x, t, cond):
        return x * 0 + cond

    x, t = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    assert torch.equal(guided(denoised, 2.0, 1.0, 1.0)(x, t), torch.full((2, 3), 2.0))
    assert torch.equal(guided(denoised, 2.0, 1.0, 0.0)(x, t), torch.full((2, 3), 1.0))
    assert torch.equal(guided(denoised, 2.0, 1.0, 3.0)(x, t), torch.full((2, 3), 4.0))  # 1 + 3*(2-1)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_precond_feeds_c_noise_and_returns_x0_whatever_the_parameterisation(prediction):
    class Cond:
        def __init__(self, value):
            self.value = value

        def unconditional(self):
            return Cond(0.0)

    schedule = GaussianDiffusion("cosine", 1000, prediction)
    x0_true = torch.full((2, 3), 0.7)
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500, 250])
    x_t = schedule.q_sample(x0_true, t, noise)
    seen = []

    def network(x, c_noise, cond):  # an oracle: the exact target, scaled by the condition's value
        seen.append(c_noise)
        return schedule.target(x0_true, noise, t) * cond.value

    precond = Precond(network, schedule)
    assert torch.allclose(precond.denoised(x_t, t, Cond(1.0)), x0_true, atol=1e-5)
    assert torch.allclose(seen[0], torch.tensor([500.0, 250.0]))  # c_noise = 1000 t / N
    # guidance 2: uncond output 0, cond output the oracle -> x0 pushed past the oracle's x0
    guided_x0 = precond.sampler_denoise(Cond(1.0), guidance_scale=2.0)(x_t, t)
    zero_x0 = precond.denoised(x_t, t, Cond(0.0))
    assert torch.allclose(guided_x0, zero_x0 + 2 * (x0_true - zero_x0), atol=1e-4)
