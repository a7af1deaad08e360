"""Gaussian diffusion math, kept apart from the network and the samplers.

Holds the noise schedule (as alphas_cumprod over N discrete steps), the forward process
q(x_t | x_0), the conversion between the network's output (epsilon or v) and (epsilon, x_0),
the training loss with per-noise-level-bucket reporting, and the latent scale factor.

Timesteps `t` are integer indices 0..N-1 (t=0 is the least noisy). What the network is told about
the noise, and how its output becomes x0 for the samplers, is tools/diffusion/precond.py's business.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from tools.core.errors import UserError

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v")
MAX_BETA = 0.999  # avoids a singular last step in the cosine schedule (Nichol & Dhariwal 2021)


def cosine_alphas_cumprod(n_steps: int, offset: float = 0.008) -> Tensor:
    """alpha_bar(t) = cos^2(((t+1)/N + s) / (1 + s) * pi/2) / f(0), with betas capped at MAX_BETA."""
    grid = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    f = torch.cos((grid + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)
    return torch.cumprod(1 - betas, dim=0)


def linear_alphas_cumprod(n_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear betas, rescaled by 1000/N so any N spans the same total noise."""
    scale = 1000.0 / n_steps
    betas = torch.linspace(beta_start * scale, min(beta_end * scale, MAX_BETA), n_steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def make_alphas_cumprod(schedule: str, n_steps: int) -> Tensor:
    if schedule == "cosine":
        return cosine_alphas_cumprod(n_steps)
    if schedule == "linear":
        return linear_alphas_cumprod(n_steps)
    raise UserError(f"diffusion.schedule={schedule!r} is unknown: use one of {SCHEDULES} in the config.")


def _gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] shaped [B, 1, 1, ...] to broadcast against `like`, in float32 on like's device."""
    out = values.to(like.device)[t.to(like.device)].float()
    return out.view(-1, *([1] * (like.dim() - 1)))


class GaussianDiffusion:
    """The noise schedule plus the parameterisation of the network output.

    Also serves as the `schedule` argument of tools.diffusion.samplers, which only read
    `alphas_cumprod` and `n_steps`.
    """

    def __init__(self, schedule: str = "cosine", n_steps: int = 1000, prediction: str = "eps") -> None:
        if prediction not in PREDICTIONS:
            raise UserError(f"diffusion.prediction={prediction!r} is unknown: use one of {PREDICTIONS}.")
        if n_steps < 2:
            raise UserError(f"diffusion.n_steps={n_steps} is too small: use at least 2 (typically 1000).")
        self.schedule = schedule
        self.n_steps = int(n_steps)
        self.prediction = prediction
        self.alphas_cumprod = make_alphas_cumprod(schedule, self.n_steps)

    @classmethod
    def from_config(cls, diffusion_config: Any) -> "GaussianDiffusion":
        """From the config's `diffusion` section (sampler keys are read by the caller)."""
        return cls(diffusion_config["schedule"], int(diffusion_config["n_steps"]), diffusion_config["prediction"])

    def sample_timesteps(self, batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.n_steps, (batch,), generator=generator, device=gen_device)
        return t.to(device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        abar = _gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network is trained to output: epsilon, or v = sqrt(abar) eps - sqrt(1-abar) x0."""
        if self.prediction == "eps":
            return noise
        abar = _gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0

    def split_output(self, x_t: Tensor, t: Tensor, output: Tensor) -> tuple[Tensor, Tensor]:
        """(eps, x0) implied by the network output at (x_t, t), in float32."""
        x_t, output = x_t.float(), output.float()
        abar = _gather(self.alphas_cumprod, t, x_t)
        if self.prediction == "eps":
            eps = output
            x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        else:
            x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * output
            eps = (1 - abar).sqrt() * x_t + abar.sqrt() * output
        return eps, x0

    def training_loss(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        x0: Tensor,
        generator: torch.Generator | None = None,
        weight: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mean-squared error of the network's target at uniformly drawn timesteps.

        model_fn(x_t, t) closes over the conditioning and returns the network's parameterised output
        (Precond.network_output); t are integer timesteps; weight (broadcastable to x0) restricts the mean to
        where it is positive. Returns (loss, per_sample_loss, t).
        Noise is drawn on the generator's device, so a CPU generator gives the same draw anywhere.
        """
        t = self.sample_timesteps(x0.shape[0], generator, x0.device)
        gen_device = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=torch.float32)
        noise = noise.to(x0.device)
        x_t = self.q_sample(x0.float(), t, noise)
        output = model_fn(x_t, t)
        if output.shape != x0.shape:
            raise ValueError(f"model output shape {tuple(output.shape)} != target shape {tuple(x0.shape)}")
        error = (output.float() - self.target(x0.float(), noise, t)) ** 2
        if weight is None:
            per_sample = error.flatten(1).mean(dim=1)
        else:  # only where weight > 0 counts (e.g. real slots, not padding)
            weight = weight.float().expand_as(error)
            per_sample = (error * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1)
        return per_sample.mean(), per_sample.detach(), t

    def loss_by_bucket(self, t: Tensor, losses: Tensor, n: int = 4) -> dict[str, float]:
        """Mean loss per quarter (n buckets) of the timestep range, keyed 'loss_q0'.. (0 = least noise).

        Buckets without samples in this batch are left out rather than reported as 0.
        """
        bucket = (t.detach().cpu().long() * n) // self.n_steps
        losses = losses.detach().float().cpu()
        return {f"loss_q{b}": losses[bucket == b].mean().item() for b in range(n) if (bucket == b).any()}


def measure_scale_factor(latents: Tensor) -> float:
    """1 / std of the latents, so scaled latents have unit variance (stored in the checkpoint)."""
    std = latents.detach().float().std().item()
    if not math.isfinite(std) or std <= 1e-8:
        raise UserError(
            f"latent std is {std}: the first-stage latents are constant or non-finite; "
            "check --first_model (a trained autoencoder checkpoint) and the data it encodes."
        )
    return 1.0 / std
