"""Entry points of the data stages: `--exp generate` and `--exp check_data`."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from tools.core.distributed import DistContext
from tools.core.errors import UserError


def require_data_path(cfg: DictConfig) -> str:
    if not cfg.run.get("data_path"):
        raise UserError(f"--exp {cfg.run.exp} needs --data_path (the dataset root folder)")
    return str(cfg.run.data_path)


def generate(cfg: DictConfig, ctx: DistContext) -> int:
    """Render the physics dataset into --data_path (rank 0 only; the renderer has its own workers)."""
    from tools.generator.generate import run_generate

    data_path = require_data_path(cfg)
    settings = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "run"])  # generator keys only
    if ctx.is_main:
        run_generate(settings, data_path)
    return 0


def check_data(cfg: DictConfig, ctx: DistContext) -> int:
    """Scan a competition-format dataset; non-zero exit when problems were found."""
    if cfg.run.data != "CLEVRER":
        raise UserError(f"--exp check_data checks the competition folder format (--data CLEVRER), "
                        f"not --data {cfg.run.data}")
    from tools.data.check import run_check_data

    data_path = require_data_path(cfg)
    return run_check_data(data_path) if ctx.is_main else 0
