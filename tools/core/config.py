"""OmegaConf configs: load a stage config, apply --config_mod overrides strictly, save the resolved copy.

Overrides are strict on purpose: a typo such as `train.max_step=10` must fail loudly instead of silently
training with the default.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from tools.core.atomic import write_text_atomic
from tools.core.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_config_path(path: str | os.PathLike) -> Path:
    """Find a config given as an absolute path, relative to the cwd, or relative to the repo root."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    in_repo = REPO_ROOT / candidate
    if not candidate.is_absolute() and in_repo.is_file():
        return in_repo
    raise UserError(f"config file '{path}' not found; pass an existing YAML file "
                    f"(e.g. one under {REPO_ROOT / 'configs'})")


def load_yaml(path: str | os.PathLike) -> DictConfig:
    """Read one YAML config file with a clear error for missing or malformed files."""
    resolved = resolve_config_path(path)
    try:
        cfg = OmegaConf.load(resolved)
    except Exception as err:  # yaml.YAMLError and OmegaConf errors alike
        raise UserError(f"config file '{resolved}' is not valid YAML: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise UserError(f"config file '{resolved}' must hold a mapping at the top level")
    return cfg


def apply_overrides(cfg: DictConfig, overrides: Iterable[str], source: str = "--config_mod") -> DictConfig:
    """Apply `key=value` dotlist overrides; an unknown key is an error that names it."""
    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{source}: '{item}' is not of the form key=value (e.g. train.max_steps=100)")
        key = item.split("=", 1)[0]
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise UserError(f"{source}: unknown config key '{key}'; known top-level keys: "
                            f"{', '.join(map(str, cfg.keys()))}")
    parsed = _parse_dotlist(overrides, source)
    for item in overrides:
        key = item.split("=", 1)[0]
        _check_type(key, OmegaConf.select(cfg, key), OmegaConf.select(parsed, key), source)
    OmegaConf.set_struct(cfg, True)
    try:
        merged = OmegaConf.merge(cfg, parsed)
    except ConfigKeyError as err:
        raise UserError(f"{source}: unknown config key ({err.full_key}); check the spelling") from err
    except OmegaConfBaseException as err:
        raise UserError(f"{source}: cannot apply override: {err}") from err
    OmegaConf.set_struct(merged, False)
    return merged


_MISSING = object()


def _parse_dotlist(overrides: list[str], source: str) -> DictConfig:
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as err:
        raise UserError(f"{source}: cannot parse the overrides ({str(err).splitlines()[0]})") from err


def _kind(value: object) -> str:
    """The type family an override must keep: a typo such as max_steps=abc must not reach int()."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, ListConfig):
        return "a list"
    if isinstance(value, DictConfig):
        return "a mapping"
    return "any"  # strings and nulls: paths and names may look like anything


def _check_type(key: str, old: object, new: object, source: str) -> None:
    """Refuse an override whose value cannot stand where the config has a value of another type."""
    expected = _kind(old)
    if expected == "any" or new is None:  # null deliberately unsets a value
        return
    got = _kind(new)
    fits = (got == expected or (expected == "a number" and got == "an integer")
            or (expected == "an integer" and got == "a number" and float(new).is_integer()))
    if not fits:
        example = str(old).lower() if isinstance(old, bool) else old
        raise UserError(f"{source}: {key}={new} is not {expected} (the config has {key}: {example}); "
                        f"pass {expected}, e.g. {key}={example}")


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the fully resolved config as YAML, atomically."""
    write_text_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))


def to_plain(cfg: DictConfig) -> dict:
    """A plain, resolved dict (for checkpoints, which must hold only primitive types)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
