"""Checkpoints: complete training state, written atomically, loaded with weights_only=True.

A checkpoint is one dict holding `model`, `ema`, `optimizer`, `scaler` (state dicts), `step`, `rng`
(all RNG states as tensors) and `config` (a plain resolved dict). Writing goes to a temporary file in the
same folder and is renamed over the target, so a kill never leaves a torn `model_last.pth`.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tools.core.atomic import atomic_path
from tools.core.errors import UserError


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Save `state` to `path` atomically (temporary name, fsync, rename)."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing, torn or foreign file is refused with a message naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; check the path (e.g. --first_model) "
                        f"or train that stage first")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint '{path}' is empty (0 bytes), e.g. from a full disk or an interrupted copy; "
                        f"delete it or restore a numbered snapshot from the same folder")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise UserError(_not_allowed_message(path, str(err))) from None
        raise UserError(_unreadable_message(path, err)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise UserError(_unreadable_message(path, err)) from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise UserError(f"checkpoint '{path}' is not a checkpoint of this project (no 'model'/'step' "
                        f"entries); pass a model_last.pth written by main.py")
    return state


def _unreadable_message(path: Path, err: Exception) -> str:
    detail = next((line for line in str(err).splitlines() if line.strip()), "no details")  # may be empty
    return (f"checkpoint '{path}' is unreadable or truncated ({type(err).__name__}: {detail[:200]}); "
            f"delete it or restore a numbered snapshot from the same folder")


def _not_allowed_message(path: Path, torch_message: str) -> str:
    """Never repeat torch's advice to load with weights_only=False: that would run the file's code."""
    found = re.search(r"GLOBAL ([\w.]+)", torch_message)
    what = f" (it references {found.group(1)})" if found else ""
    return (f"checkpoint '{path}' holds code or Python objects that are not allowed in a checkpoint{what}, so "
            f"it was not loaded; it was not written by main.py or has been altered. Use a model_last.pth "
            f"written by this project")


def check_config_matches(saved: dict, current: dict, section: str, path: str | os.PathLike) -> None:
    """Refuse to load weights made with a different `section` (e.g. 'model') config."""
    old, new = saved.get(section), current.get(section)
    if old is None or new is None or old == new:
        return
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise UserError(f"checkpoint '{path}' was made with a different '{section}' config (differs in: "
                    f"{', '.join(diff)}); use the config it was trained with, or start a new run with "
                    f"--fresh or another --id")


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors (weights_only-safe)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor(np_state[4], dtype=torch.float64),
        "python": torch.tensor(py_internal, dtype=torch.int64),
        "python_meta": torch.tensor([py_version, 0 if py_gauss is None else 1], dtype=torch.int64),
        "python_gauss": torch.tensor(0.0 if py_gauss is None else py_gauss, dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state."""
    torch.set_rng_state(state["torch"].cpu())
    pos, has_gauss = (int(v) for v in state["numpy_pos"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_gauss"])))
    py_version, has_py_gauss = (int(v) for v in state["python_meta"])
    py_gauss = float(state["python_gauss"]) if has_py_gauss else None
    random.setstate((py_version, tuple(int(v) for v in state["python"]), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def weights_for_inference(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The EMA weights when the checkpoint has them (what sampling should use), else the raw model."""
    weights = dict(state["model"])
    ema = state.get("ema")
    if isinstance(ema, dict) and ema.get("shadow"):  # tools/train/ema.py: averaged parameters, copied buffers
        averaged = {**ema["shadow"], **(ema.get("buffers") or {})}
        # Only names the state dict has: non-persistent buffers are tracked by the EMA but never saved.
        weights.update({name: value for name, value in averaged.items() if name in weights})
    return weights
