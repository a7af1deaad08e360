"""Checkpoints round-trip, torn files are refused, RNG state is restored exactly."""
import random

import numpy as np
import pytest
import torch

from tools.core.checkpoint import (capture_rng_state, check_config_matches, load_checkpoint, restore_rng_state,
                              save_checkpoint)
from tools.core.errors import UserError


def _state():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 17,
            "rng": [capture_rng_state()], "config": {"model": {"channels": 8}}}


def test_round_trip(tmp_path):
    state = _state()
    save_checkpoint(state, tmp_path / "model_last.pth")
    loaded = load_checkpoint(tmp_path / "model_last.pth")
    assert loaded["step"] == 17
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    assert loaded["optimizer"]["state"][0]["exp_avg"].shape == (3, 4)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_truncated_copy_refused_good_one_loads(tmp_path):
    good = tmp_path / "model_last.pth"
    save_checkpoint(_state(), good)
    torn = tmp_path / "torn.pth"
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="torn.pth.*(unreadable|truncated)"):
        load_checkpoint(torn)
    assert load_checkpoint(good)["step"] == 17


def test_missing_and_foreign_files_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(UserError, match="foreign.pth"):
        load_checkpoint(tmp_path / "foreign.pth")


def test_config_mismatch_refused():
    check_config_matches({"model": {"c": 1}}, {"model": {"c": 1}}, "model", "x.pth")
    with pytest.raises(UserError, match="differs in: c"):
        check_config_matches({"model": {"c": 1}}, {"model": {"c": 2}}, "model", "x.pth")


def test_rng_state_restores_every_generator(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian half of the time in numpy's legacy API
    random.gauss(0, 1)
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    save_checkpoint({"model": {}, "step": 0, "rng": [state]}, tmp_path / "c.pth")
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"][0])
    again = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]
