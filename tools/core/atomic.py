"""Writing files so that a kill never leaves one half-written: a temporary name beside it, then a rename."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, prefix: str = ".") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; it replaces `path` only if the block succeeds.

    The temporary name keeps the suffix (PIL and numpy pick the format from it) and starts with `prefix`,
    so leftovers of a killed process can be found and removed by that prefix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{prefix}{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str, prefix: str = ".") -> None:
    with atomic_path(path, prefix) as temp:
        temp.write_text(text)


def save_npy_atomic(path: str | os.PathLike, array: Any, prefix: str = ".") -> None:
    import numpy as np

    with atomic_path(path, prefix) as temp:
        np.save(temp, array)


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as temp:
        torch.save(obj, temp)
