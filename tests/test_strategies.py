"""Inference strategies yield the exact (observed, target) index sequences (0-based)."""
import pytest
import torch

from tools.core.errors import UserError
from tools.diffusion.strategies import STRATEGIES, get_strategy, run_plan

OBS = list(range(11))


def test_direct_is_one_step_from_frames_0_10_to_21():
    assert get_strategy("direct").steps() == [(OBS, [21])]
    assert get_strategy("direct", n_tgt=3).steps() == [(OBS, [14, 17, 21])]
    assert get_strategy("direct", n_obs=2).steps() == [([9, 10], [21])]


def test_autoregressive_k_frames_at_a_time_on_the_last_m():
    assert get_strategy("autoregressive", k=5, m=11).steps() == [
        (OBS, [11, 12, 13, 14, 15]),
        (list(range(5, 16)), [16, 17, 18, 19, 20]),
        (list(range(10, 21)), [21]),
    ]
    plan = get_strategy("autoregressive", k=1, m=3).steps()
    assert [t for _, t in plan] == [[f] for f in range(11, 22)]
    assert plan[0][0] == [8, 9, 10] and plan[-1][0] == [18, 19, 20]


def test_skip_goes_12_14_16_18_20_21():
    plan = get_strategy("skip").steps()
    assert [t for _, t in plan] == [[12], [14], [16], [18], [20], [21]]
    assert plan[0][0] == OBS
    assert plan[1][0] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert plan[-1][0] == [5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20]


def test_hierarchical_keyframes_then_fill_in_from_both_sides():
    assert get_strategy("hierarchical", n_keyframes=3, m=4).steps() == [
        ([7, 8, 9, 10], [14, 17, 21]),
        ([8, 9, 10, 14], [11, 12, 13]),
        ([12, 13, 14, 17], [15, 16]),
        ([15, 16, 17, 21], [18, 19, 20]),
    ]
    assert get_strategy("hierarchical", n_keyframes=3, fill_in=False).steps() == [(OBS, [14, 17, 21])]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("observed,target", [(range(11), 21), (range(3), 9), ([0, 2, 4], 5)])
def test_every_plan_conditions_only_on_known_frames_and_reaches_the_target(name, observed, target):
    known = set(observed)
    for obs, tgt in get_strategy(name).steps(22, observed, target):
        assert obs and tgt and set(obs) <= known
        assert not set(tgt) & known and max(tgt) <= target
        known |= set(tgt)
    assert target in known


def test_bad_requests_are_user_errors():
    with pytest.raises(UserError, match="strategy"):
        get_strategy("teleport")
    with pytest.raises(UserError, match="after the observed"):
        get_strategy("direct").steps(22, range(11), 5)
    with pytest.raises(UserError, match="inside the clip"):
        get_strategy("skip").steps(22, range(11), 22)
    with pytest.raises(UserError, match="invalid"):
        get_strategy("skip", k=3)


def test_run_plan_feeds_generated_frames_into_later_steps():
    known = {i: torch.full((2, 1, 1, 1), float(i)) for i in range(11)}
    calls = []

    def generate(obs_idx, tgt_idx, obs):
        calls.append((obs_idx, tgt_idx))
        assert [obs[0, k].item() for k in range(len(obs_idx))] == [float(i) for i in obs_idx]
        return torch.stack([torch.full((2, 1, 1, 1), float(i)) for i in tgt_idx], dim=1)

    frames = run_plan(get_strategy("skip").steps(), known, generate)
    assert sorted(frames) == list(range(11)) + [12, 14, 16, 18, 20, 21]
    assert frames[21][0].item() == 21.0 and len(calls) == 6
    with pytest.raises(ValueError, match="neither observed nor generated"):
        run_plan([([30], [31])], known, generate)
