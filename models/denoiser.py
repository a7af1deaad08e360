"""The stage-2 denoiser: a per-frame 2D UNet with temporal self-attention over a set of frames.

forward(x_noisy, noise_level, cond) sees only the noisy target frames, the noise level and the
conditioning; the noise schedule lives in tools/diffusion/gaussian.py.

- Frames as a set: observed frames (clean) and target frames (noisy) form one sequence. Each frame
  carries an embedding of its absolute frame index (sinusoidal, so any index works, not just 0..21),
  a flag (target / observed / masked observed) and, for targets, the noise level. These reach every
  ResBlock by FiLM and are added before each temporal attention, so any observed/target index sets
  work, e.g. 0..10 -> 21 directly.
- Masked observed frames (obs_keep False) are zeroed and excluded as attention keys, so they carry
  no information (MCVD-style masking and classifier-free guidance).
- Static latents (scene + object) are computed from observed frames, so by default a sample with no kept
  observed frame also gets zero static latents. `static_keep` overrides that per sample: generation keeps
  static latents drawn from the static prior while nothing is observed, and classifier-free guidance's
  unconditional branch drops them. cond_mode 'concat' concatenates them to every frame's channels; 'spade'
  modulates every normalisation with them instead (MCVD's SPADE option).
- Sizes not divisible by 2^(levels-1) are zero-padded and cropped back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import ModelConfigError

TARGET, OBSERVED, MASKED = 0, 1, 2


@dataclass
class DenoiserCond:
    """What the denoiser is conditioned on, beside the noisy targets and the noise level.

    obs [B,To,C,h,w] observed latents; obs_idx [B,To] and tgt_idx [B,Tt] frame indices (absolute, or relative to
    the window's first frame for long videos); obs_keep [B,To] bool (False = masked out); static [B,Cs+Co,h,w] or
    None; static_keep [B] bool or None (None: static latents count where some observed frame is kept).
    """

    obs: Tensor
    obs_idx: Tensor
    tgt_idx: Tensor
    obs_keep: Tensor
    static: Tensor | None = None
    static_keep: Tensor | None = None

    def unconditional(self) -> "DenoiserCond":
        """The same sets with every observed frame and the static latents masked (classifier-free guidance)."""
        batch = self.obs_keep.shape[0]
        return replace(self, obs_keep=torch.zeros_like(self.obs_keep),
                       static_keep=torch.zeros(batch, dtype=torch.bool, device=self.obs_keep.device))

    def static_used(self) -> Tensor:
        """[B] bool: which samples see their static latents."""
        return self.obs_keep.any(dim=1) if self.static_keep is None else self.static_keep.to(self.obs_keep.device)

    def _map(self, fn) -> "DenoiserCond":
        return DenoiserCond(*(None if x is None else fn(x) for x in (self.obs, self.obs_idx, self.tgt_idx,
                                                                      self.obs_keep, self.static, self.static_keep)))

    def to(self, device: torch.device | str) -> "DenoiserCond":
        """Every tensor moved to `device` (the model's), e.g. after building the sets on the CPU."""
        return self._map(lambda x: x.to(device))

    def repeat_interleave(self, n: int) -> "DenoiserCond":
        """Each sample repeated n times along the batch (n samples per video)."""
        return self._map(lambda x: x.repeat_interleave(n, dim=0))


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[...] float -> [..., dim] sin/cos features at geometric frequencies (transformer style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def norm_groups(channels: int) -> int:
    """Largest group count <= 32 leaving at least 4 channels per group."""
    return max(g for g in range(1, 33) if channels % g == 0 and channels // g >= min(4, channels))


def zero_init(module: nn.Module) -> nn.Module:
    """Residual branches start as identity, which keeps early training stable."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Spade(nn.Module):
    """GroupNorm without affine, then scale/shift maps predicted from the static latents."""

    def __init__(self, channels: int, cond_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(channels), channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.SiLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: Tensor, static: Tensor) -> Tensor:
        # static is [B, Cs, h, w] while x is [B*S, C, H, W]: modulate per sample, repeat per frame
        frames = x.shape[0] // static.shape[0]
        hidden = self.shared(F.interpolate(static, size=x.shape[-2:], mode="nearest"))
        gamma = self.gamma(hidden).repeat_interleave(frames, dim=0)
        beta = self.beta(hidden).repeat_interleave(frames, dim=0)
        return self.norm(x) * (1 + gamma) + beta


class ResBlock(nn.Module):
    """GroupNorm (or SPADE) -> SiLU -> conv, FiLM by the frame embedding, -> conv, plus skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, spade_channels: int) -> None:
        super().__init__()
        self.spade = spade_channels > 0
        self.norm1 = Spade(c_in, spade_channels) if self.spade else nn.GroupNorm(norm_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(norm_groups(c_out), c_out, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor, static: Tensor | None) -> Tensor:
        h = self.norm1(x, static) if self.spade else self.norm1(x)
        h = self.conv1(F.silu(h))
        scale, shift = self.film(F.silu(emb))[..., None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class TemporalAttention(nn.Module):
    """Self-attention across the frames of a sample at every pixel; masked frames are not keys."""

    def __init__(self, channels: int, emb_dim: int, n_heads: int) -> None:
        super().__init__()
        if channels % n_heads:
            raise ModelConfigError(f"model.n_heads={n_heads} must divide every level's channel count ({channels}).")
        self.n_heads = n_heads
        self.norm = nn.GroupNorm(norm_groups(channels), channels)
        self.position = nn.Linear(emb_dim, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor, emb: Tensor, key_valid: Tensor) -> Tensor:
        batch, frames = key_valid.shape
        _, channels, height, width = x.shape
        tokens = self.norm(x).view(batch, frames, channels, height * width).permute(0, 3, 1, 2)
        tokens = tokens + self.position(emb).view(batch, 1, frames, channels)
        q, k, v = self.qkv(tokens).reshape(batch * height * width, frames, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        mask = key_valid[:, None, None, None, :].expand(batch, height * width, 1, 1, frames)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.reshape(-1, 1, 1, frames))
        attended = attended.transpose(1, 2).reshape(batch, height * width, frames, channels)
        update = self.out(attended).permute(0, 2, 3, 1).reshape(batch * frames, channels, height, width)
        return x + update


class VideoDenoiser(nn.Module):
    """Predicts the diffusion target (eps or v) of the target frames: output shape = x_noisy's.

    noise_level: [B] float, the noise conditioning value c_noise (tools/diffusion/precond.py feeds 1000 t / N).
    """

    def __init__(
        self,
        channels: int,
        static_channels: int = 0,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        n_res_blocks: int = 2,
        attn_levels: Sequence[int] = (1, 2),
        n_heads: int = 4,
        dropout: float = 0.0,
        cond_mode: str = "concat",
    ) -> None:
        super().__init__()
        if cond_mode not in ("concat", "spade"):
            raise ModelConfigError(f"model.cond_mode={cond_mode!r} is unknown: use 'concat' or 'spade'.")
        if cond_mode == "spade" and static_channels == 0:
            raise ModelConfigError("model.cond_mode=spade needs static latents (scene/object channels > 0); "
                            "use cond_mode=concat in pixel mode (--first_model none).")
        self.channels, self.static_channels, self.cond_mode = channels, static_channels, cond_mode
        self.n_levels = len(channel_mults)
        self.base_channels = base_channels
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.index_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.flag_embedding = nn.Embedding(3, emb_dim)
        spade = static_channels if cond_mode == "spade" else 0
        concat = static_channels if cond_mode == "concat" else 0
        self.input_conv = nn.Conv2d(channels + concat, base_channels, 3, padding=1)
        block = lambda c_in, c_out: ResBlock(c_in, c_out, emb_dim, dropout, spade)  # noqa: E731
        attn = lambda c: TemporalAttention(c, emb_dim, n_heads)  # noqa: E731

        self.down, skips, c = nn.ModuleList(), [base_channels], base_channels
        for level, mult in enumerate(channel_mults):
            for _ in range(n_res_blocks):
                layers = [block(c, base_channels * mult)]
                c = base_channels * mult
                if level in attn_levels:
                    layers.append(attn(c))
                self.down.append(nn.ModuleList(layers))
                skips.append(c)
            if level < self.n_levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                skips.append(c)
        self.mid = nn.ModuleList([block(c, c), attn(c), block(c, c)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for i in range(n_res_blocks + 1):
                layers = [block(c + skips.pop(), base_channels * mult)]
                c = base_channels * mult
                if level in attn_levels:
                    layers.append(attn(c))
                if level > 0 and i == n_res_blocks:
                    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    layers.append(nn.Conv2d(c, c, 3, padding=1))
                self.up.append(nn.ModuleList(layers))
        self.output = nn.Sequential(nn.GroupNorm(norm_groups(c), c), nn.SiLU(), zero_init(nn.Conv2d(c, channels, 3, padding=1)))

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> "VideoDenoiser":
        """Build from the `model` config section; the caller supplies channel counts it measured."""
        options = {**dict(config), **overrides}
        try:
            return cls(**options)
        except TypeError as error:
            raise ModelConfigError(f"the model section of the latent-diffusion config is invalid: {error}") from error

    def frame_embeddings(self, noise_level: Tensor, cond: DenoiserCond, n_tgt: int) -> Tensor:
        """[B, To+Tt, emb]: frame index + flag for every frame, noise level for targets (0 for observed)."""
        batch, n_obs = cond.obs_idx.shape
        index = torch.cat([cond.obs_idx, cond.tgt_idx], dim=1)
        flags = torch.cat([torch.where(cond.obs_keep, OBSERVED, MASKED),
                           torch.full((batch, n_tgt), TARGET, device=index.device)], dim=1)
        level = torch.cat([torch.zeros(batch, n_obs, device=index.device),
                           noise_level.float().view(batch, 1).expand(batch, n_tgt)], dim=1)
        emb = self.time_mlp(sinusoidal_embedding(level, self.base_channels))
        emb = emb + self.index_mlp(sinusoidal_embedding(index.float(), self.base_channels))
        return emb + self.flag_embedding(flags)

    def _check(self, x_noisy: Tensor, cond: DenoiserCond) -> None:
        if x_noisy.dim() != 5 or x_noisy.shape[2] != self.channels:
            raise ValueError(f"x_noisy must be [B,Tt,{self.channels},h,w], got {tuple(x_noisy.shape)}")
        if cond.obs.shape[2:] != x_noisy.shape[2:] or cond.tgt_idx.shape != x_noisy.shape[:2]:
            raise ValueError(f"cond.obs {tuple(cond.obs.shape)} / tgt_idx {tuple(cond.tgt_idx.shape)} "
                             f"do not match x_noisy {tuple(x_noisy.shape)}")
        if self.static_channels and (cond.static is None or cond.static.shape[1] != self.static_channels):
            raise ValueError(f"cond.static must have {self.static_channels} channels")

    def forward(self, x_noisy: Tensor, noise_level: Tensor, cond: DenoiserCond) -> Tensor:
        self._check(x_noisy, cond)
        batch, n_tgt, _, height, width = x_noisy.shape
        n_obs = cond.obs.shape[1]
        keep = cond.obs_keep.to(x_noisy.device)
        frames = torch.cat([cond.obs.to(x_noisy.dtype) * keep[:, :, None, None, None], x_noisy], dim=1)
        key_valid = torch.cat([keep, torch.ones(batch, n_tgt, dtype=torch.bool, device=keep.device)], dim=1)
        static = None
        if self.static_channels:
            static = cond.static.to(x_noisy.dtype) * cond.static_used()[:, None, None, None].to(x_noisy.dtype)
        if self.cond_mode == "concat" and static is not None:
            frames = torch.cat([frames, static[:, None].expand(-1, frames.shape[1], -1, -1, -1)], dim=2)
        emb = self.frame_embeddings(noise_level, cond, n_tgt)
        h = self._pad(frames.flatten(0, 1))
        if static is not None:
            static = self._pad(static)
        spade_static = static if self.cond_mode == "spade" else None
        out = self._unet(self.input_conv(h), emb, key_valid, spade_static)
        out = out[..., :height, :width].reshape(batch, n_obs + n_tgt, self.channels, height, width)
        return out[:, n_obs:]

    def _pad(self, x: Tensor) -> Tensor:
        multiple = 2 ** (self.n_levels - 1)
        pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def _run_layers(self, layers: nn.ModuleList, h: Tensor, emb: Tensor, key_valid: Tensor, static: Tensor | None) -> Tensor:
        flat_emb = emb.flatten(0, 1)
        for layer in layers:
            if isinstance(layer, ResBlock):
                h = layer(h, flat_emb, static)
            elif isinstance(layer, TemporalAttention):
                h = layer(h, emb, key_valid)
            else:
                h = layer(h)
        return h

    def _unet(self, h: Tensor, emb: Tensor, key_valid: Tensor, static: Tensor | None) -> Tensor:
        skips = [h]
        for layers in self.down:
            h = self._run_layers(layers, h, emb, key_valid, static)
            skips.append(h)
        h = self._run_layers(self.mid, h, emb, key_valid, static)
        for layers in self.up:
            h = self._run_layers(layers, torch.cat([h, skips.pop()], dim=1), emb, key_valid, static)
        return self.output(h)
