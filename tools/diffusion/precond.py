"""The one place that knows how the network's input and output relate to the diffusion process.

As k-diffusion's `layers.Denoiser` and edm2's `Precond`: the network sees (x_t, c_noise, cond) with
c_noise = 1000 t / N (so one network serves any number of steps N), and returns the parameterised output
(epsilon or v, `diffusion.prediction`). `Precond` turns that into what the rest of the code wants:
- `network_output(x_t, t, cond)` for the training loss (the target is epsilon or v);
- `denoised(x_t, t, cond)`, the predicted clean x0, for the samplers, which therefore know nothing about
  the parameterisation.
Classifier-free guidance combines denoised predictions (an affine map of the network output at fixed x_t,
so this equals guiding the raw outputs).
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from tools.diffusion.gaussian import GaussianDiffusion
from tools.diffusion.samplers import Denoise

NOISE_INPUT_SCALE = 1000.0  # c_noise = 1000 t / N: the range DDPM's sinusoidal time embedding was built for


class Precond:
    """A network wrapped with the noise-level input and output conventions of one diffusion process."""

    def __init__(self, network: Callable[..., Tensor], diffusion: GaussianDiffusion) -> None:
        self.network, self.diffusion = network, diffusion

    def noise_input(self, t: Tensor) -> Tensor:
        """c_noise fed to the network for integer timesteps t."""
        return t.float() * (NOISE_INPUT_SCALE / self.diffusion.n_steps)

    def network_output(self, x_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        return self.network(x_t, self.noise_input(t), cond)

    def denoised(self, x_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        """The predicted clean sample x0 (float32) at (x_t, t)."""
        return self.diffusion.split_output(x_t, t, self.network_output(x_t, t, cond))[1]

    def sampler_denoise(self, cond: Any, guidance_scale: float = 1.0) -> Denoise:
        """denoise(x_t, t) -> x0 for the samplers; the unconditional branch of guidance is
        `cond.unconditional()` (every observed frame masked)."""
        uncond = cond.unconditional() if guidance_scale != 1.0 else None
        return guided(self.denoised, cond, uncond, guidance_scale)


def guided(denoised: Callable[[Tensor, Tensor, Any], Tensor], cond: Any, uncond: Any, scale: float) -> Denoise:
    """Classifier-free guidance: out = uncond_out + scale * (cond_out - uncond_out).

    scale 1 is the plain conditional model (one network call per step), scale 0 the unconditional one,
    scale > 1 pushes samples towards the condition.
    """
    if scale == 1.0:
        return lambda x, t: denoised(x, t, cond)
    if scale == 0.0:
        return lambda x, t: denoised(x, t, uncond)

    def combined(x: Tensor, t: Tensor) -> Tensor:
        out_cond = denoised(x, t, cond).float()
        out_uncond = denoised(x, t, uncond).float()
        return out_uncond + scale * (out_cond - out_uncond)

    return combined

