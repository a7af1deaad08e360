"""Writing files so that a kill never leaves one half-written: a temporary name beside it, then a rename."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any, Iterator

from tools.core.errors import UserError

TEMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, prefix: str = ".") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; it replaces `path` only if the block succeeds.

    The temporary name keeps the suffix (PIL and numpy pick the format from it) and starts with `prefix`,
    so leftovers of a killed process can be found and removed by that prefix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{prefix}{path.name}{TEMP_MARK}{os.getpid()}{path.suffix}")
    try:
        yield temp
        os.replace(temp, path)
    except OSError as err:
        if err.errno == errno.ENOSPC:  # the old file is untouched; say where space is missing
            raise UserError(disk_full_message(path.parent)) from None
        raise
    finally:
        temp.unlink(missing_ok=True)


def disk_full_message(folder: str | os.PathLike) -> str:
    return (f"no space left on the device holding '{folder}'; the files already there are intact. Free space "
            f"there (or pass --results_dir on another disk) and re-run the same command to continue")


def is_temp_leftover(path: Path) -> bool:
    """A temporary file of atomic_path (`.NAME.tmp-PID...`), e.g. left by a kill -9."""
    return path.name.startswith(".") and TEMP_MARK in path.name


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
