"""MuJoCo physics video generator writing the competition folder format (see generate.py)."""
from tools.generator.generate import generate_dataset, run_generate
from tools.generator.settings import settings_from_config

__all__ = ["generate_dataset", "run_generate", "settings_from_config"]
