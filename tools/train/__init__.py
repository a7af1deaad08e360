"""Training: the shared loop, one module per stage (first_stage, ddpm, segmenter), their losses, EMA and image grids."""
