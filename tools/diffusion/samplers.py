"""DDPM and DDIM samplers as pure functions of (denoise, x_T, schedule, ...).

`denoise(x_t, t) -> x0` is the predicted clean sample; it already closes over the conditioning and the
guidance (tools/diffusion/precond.py), so the samplers know nothing about the network's parameterisation.
`t` is a LongTensor [B] of timesteps of the full schedule. `schedule` is anything with `alphas_cumprod` and
`n_steps` (tools.diffusion.gaussian.GaussianDiffusion).
Fewer sampling steps use a respaced subsequence of timesteps: each step goes from alpha_bar at
one kept timestep to alpha_bar at the next, which is exact respacing (Nichol & Dhariwal 2021).
Sampler arithmetic runs in float32 whatever dtype the network returns (bf16 under autocast).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from tools.core.errors import UserError

Denoise = Callable[[Tensor, Tensor], Tensor]  # (x_t, timesteps [B]) -> denoised x0


def respaced_timesteps(n_steps: int, steps: int | None) -> list[int]:
    """Evenly spaced timesteps from N-1 down to 0 (descending), `steps` of them (all if None).

    One step is the noisiest timestep alone: the sampler starts from pure noise, so its single denoising
    must be at t = N-1 (it then returns the denoiser's estimate of the conditional mean)."""
    if steps is None or steps >= n_steps:
        return list(range(n_steps - 1, -1, -1))
    if steps < 1:
        raise UserError(f"diffusion.sample_steps={steps} must be at least 1.")
    if steps == 1:
        return [n_steps - 1]
    grid = torch.linspace(0, n_steps - 1, steps).round().long().unique()
    return grid.flip(0).tolist()


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32).to(x.device)


def _predict(denoise: Denoise, x: Tensor, t: int, schedule: Any, clip_x0: float | None) -> tuple[Tensor, Tensor]:
    """(eps, x0) at timestep t: x0 from the denoiser (optionally clipped), eps the noise it implies."""
    t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    x0 = denoise(x, t_batch).float()
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    abar = float(schedule.alphas_cumprod[t])
    eps = (x - abar**0.5 * x0) / (1 - abar) ** 0.5
    return eps, x0


def _alpha_bar_pairs(schedule: Any, steps: int | None) -> list[tuple[int, float, float]]:
    """(t, abar_t, abar_prev) along the respaced chain; abar_prev = 1 at the last step."""
    times = respaced_timesteps(schedule.n_steps, steps)
    abar = schedule.alphas_cumprod
    return [(t, float(abar[t]), float(abar[times[i + 1]]) if i + 1 < len(times) else 1.0)
            for i, t in enumerate(times)]


@torch.no_grad()
def ddpm_sample(
    denoise: Denoise,
    x_T: Tensor,
    schedule: Any,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    clip_x0: float | None = None,
) -> Tensor:
    """Ancestral sampling from the posterior q(x_prev | x_t, x0_hat) along the (respaced) chain."""
    x = x_T.float()
    for t, abar_t, abar_prev in _alpha_bar_pairs(schedule, steps):
        _, x0 = _predict(denoise, x, t, schedule, clip_x0)
        if abar_prev >= 1.0:
            return x0
        beta = 1 - abar_t / abar_prev
        coef_x0 = abar_prev**0.5 * beta / (1 - abar_t)
        coef_xt = (1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar_t)
        variance = beta * (1 - abar_prev) / (1 - abar_t)
        x = coef_x0 * x0 + coef_xt * x + variance**0.5 * _randn_like(x, generator)
    return x


@torch.no_grad()
def ddim_sample(
    denoise: Denoise,
    x_T: Tensor,
    schedule: Any,
    steps: int | None = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip_x0: float | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021): eta=0 is deterministic given x_T, eta=1 matches DDPM's variance."""
    x = x_T.float()
    for t, abar_t, abar_prev in _alpha_bar_pairs(schedule, steps):
        eps, x0 = _predict(denoise, x, t, schedule, clip_x0)
        if abar_prev >= 1.0:
            return x0
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
        direction = max(1 - abar_prev - sigma**2, 0.0) ** 0.5
        x = abar_prev**0.5 * x0 + direction * eps
        if sigma > 0:
            x = x + sigma * _randn_like(x, generator)
    return x


def sample(denoise: Denoise, x_T: Tensor, schedule: Any, sampler: str, steps: int | None,
           eta: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Dispatch on the config's diffusion.sampler name ('ddpm' or 'ddim')."""
    if sampler == "ddpm":
        return ddpm_sample(denoise, x_T, schedule, steps, generator)
    if sampler == "ddim":
        return ddim_sample(denoise, x_T, schedule, steps, eta, generator)
    raise UserError(f"diffusion.sampler={sampler!r} is unknown: use 'ddpm' or 'ddim' in the config.")
