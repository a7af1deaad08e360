"""Run folders: results/{exp}_{id}_{data}_{seed}/ holding the resolved config, checkpoints and logs.

Re-running the same command finds the folder and resumes from its model_last.pth; --fresh moves the old
folder aside (never deletes it) and starts again. While a stage runs, its folder holds a lock file with the
process id, so a second command with the same --id is refused instead of interleaving checkpoints and logs.
A stage that fails before writing any result removes the folder it created, so no half-made run is left.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

from tools.core.atomic import is_temp_leftover, write_text_atomic
from tools.core.config import save_config
from tools.core.distributed import DistContext, barrier
from tools.core.errors import UserError

LAST_CHECKPOINT = "model_last.pth"
BEST_CHECKPOINT = "model_best.pth"  # the best weights by a stage's validation score (segmenter, object classifier)
LOCK_FILE = ".lock"
INPUTS_FILE = "inputs.json"
# What a run folder holds before it holds any result: removing such a folder loses nothing.
_NOT_RESULTS = {"config.yaml", LOCK_FILE, "stats.jsonl", INPUTS_FILE}

_held_locks: set[Path] = set()
_created_dirs: list[Path] = []


def run_name(run: DictConfig) -> str:
    return f"{run.exp}_{run.id}_{run.data}_{run.seed}"


def run_dir_for(run: DictConfig) -> Path:
    return Path(run.results_dir) / run_name(run)


def snapshot_name(step: int) -> str:
    return f"model_{step:07d}.pth"


def prepare_run_dir(cfg: DictConfig, ctx: DistContext) -> Path:
    """Create (or reuse, or with run.fresh set aside) the run folder, lock it and save the resolved config."""
    run_dir = run_dir_for(cfg.run)
    if ctx.is_main:
        refuse_if_locked(run_dir)
        if cfg.run.get("fresh") and run_dir.exists():
            backup = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(backup)
            print(f"--fresh: moved the previous run folder to {backup}")
        if not run_dir.exists():
            run_dir.mkdir(parents=True)
            _created_dirs.append(run_dir)
        take_lock(run_dir)
        remove_temp_leftovers(run_dir)
        save_config(cfg, run_dir / "config.yaml")
    barrier(ctx)
    return run_dir


def remove_temp_leftovers(run_dir: Path) -> list[Path]:
    """Delete temporary files of writes that a kill interrupted (`.model_last.pth.tmp-PID.pth`, ...)."""
    leftovers = [path for path in run_dir.rglob(".*") if path.is_file() and is_temp_leftover(path)]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


# ----------------------------------------------------------------------------- the lock

def _lock_owner(lock: Path) -> tuple[int, str] | None:
    """(pid, host) written in a lock file; None when it is unreadable or half-written."""
    try:
        pid, host = lock.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def refuse_if_locked(run_dir: Path) -> None:
    """A UserError when another live process holds the run folder's lock; a stale lock is removed."""
    lock = run_dir / LOCK_FILE
    if not lock.exists():
        return
    owner = _lock_owner(lock)
    here = socket.gethostname()
    if owner is not None and owner == (os.getpid(), here):
        return  # this process (e.g. the pipeline) already holds it
    if owner is not None and (owner[1] != here or _process_alive(owner[0])):
        raise UserError(f"run folder {run_dir} is in use by process {owner[0]} on {owner[1]} (lock file {lock}); "
                        f"wait for it to finish or pass another --id. If that process no longer runs, delete "
                        f"{lock}")
    print(f"note: removing the stale lock {lock} of a process that no longer runs")
    lock.unlink(missing_ok=True)


def take_lock(run_dir: Path) -> None:
    lock = run_dir / LOCK_FILE
    if lock in _held_locks and lock.exists():
        return
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another process took it between our check and now
        refuse_if_locked(run_dir)
        return take_lock(run_dir)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
    _held_locks.add(lock)


@contextlib.contextmanager
def run_dir_scope() -> Iterator[None]:
    """Around one stage: release the locks it took; if it fails, also remove the run folders it created that
    hold no result yet (only the config, the lock and logs), so no half-made run is left behind."""
    first_created, locks_before = len(_created_dirs), set(_held_locks)
    failed = True
    try:
        yield
        failed = False
    finally:
        created = _created_dirs[first_created:]
        del _created_dirs[first_created:]
        for run_dir in reversed(created):
            if failed and run_dir.is_dir() and not holds_results(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)
        for lock in _held_locks - locks_before:
            if _lock_owner(lock) == (os.getpid(), socket.gethostname()):
                lock.unlink(missing_ok=True)
            _held_locks.discard(lock)


def holds_results(run_dir: Path) -> bool:
    """True when the folder holds anything but its config, lock, logs and TensorBoard events."""
    for path in run_dir.rglob("*"):
        relative = path.relative_to(run_dir)
        if path.is_dir() or relative.parts[0] == "tensorboard" or is_temp_leftover(path):
            continue
        if str(relative) not in _NOT_RESULTS:
            return True
    return False


# ----------------------------------------------------------------------------- recorded inputs

def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def check_recorded_inputs(run_dir: Path, inputs: dict[str, Any]) -> None:
    """Refuse to continue a run folder whose results were made from other inputs (checkpoints, settings)."""
    path = run_dir / INPUTS_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    current = _as_json(inputs)
    changed = sorted(key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key))
    if changed:
        shown = "; ".join(f"{key}: was {recorded.get(key)!r}, now {current.get(key)!r}" for key in changed[:4])
        raise UserError(f"{run_dir} holds results made from other inputs ({shown}; recorded in {path}); "
                        f"re-run with --fresh to start again (the old folder is moved aside) or pass another --id")


def write_recorded_inputs(run_dir: Path, inputs: dict[str, Any]) -> None:
    write_text_atomic(run_dir / INPUTS_FILE, json.dumps(_as_json(inputs), indent=2, sort_keys=True) + "\n")
