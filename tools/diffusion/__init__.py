"""Diffusion math: noise schedule and training loss, the denoiser wrapper, samplers, inference strategies, frame sets."""
