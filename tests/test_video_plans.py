"""Sampling plans of the natural-video modes: every wanted frame generated once, from frames already known, each
step inside the model's training window (so relative positions stay in the range it was trained on)."""
import pytest

from tools.core.errors import UserError
from tools.diffusion.video_plans import mode_frames, plan_video, relative

WINDOW, MAX_OBS, MAX_TGT = 16, 8, 8


def check_plan(plan, observed, wanted, window=WINDOW, max_obs=MAX_OBS, max_tgt=MAX_TGT):
    known = set(observed)
    generated = []
    for obs, tgt in plan:
        assert set(obs) <= known, f"step conditions on unknown frames {set(obs) - known}"
        assert not set(tgt) & known, "a known frame is generated again"
        assert 1 <= len(tgt) <= max_tgt and len(obs) <= max_obs
        assert max(obs + tgt) - min(obs + tgt) < window, f"step {obs} -> {tgt} leaves the window"
        known |= set(tgt)
        generated += tgt
    assert sorted(generated) == sorted(set(wanted) - set(observed))


@pytest.mark.parametrize("scheme", ["autoregressive", "hierarchical"])
@pytest.mark.parametrize("mode,n_total", [("generate", 16), ("generate", 40), ("predict", 16), ("predict", 50),
                                          ("interpolate", 16), ("interpolate", 33)])
def test_every_mode_and_length_gives_a_valid_plan(mode, n_total, scheme):
    observed, wanted = mode_frames(mode, n_total, n_cond=8, interp_stride=3)
    plan = plan_video(observed, wanted, WINDOW, MAX_OBS, MAX_TGT, scheme, stride=3)
    check_plan(plan, observed, wanted)


def test_generate_starts_from_nothing_and_predict_conditions_on_the_past():
    plan = plan_video([], range(16), WINDOW, MAX_OBS, MAX_TGT)
    assert plan[0] == ([], list(range(8))) and plan[1] == (list(range(8)), list(range(8, 16)))
    assert plan_video(range(8), range(8, 16), WINDOW, MAX_OBS, MAX_TGT) == [(list(range(8)), list(range(8, 16)))]
    long = plan_video(range(8), range(8, 32), WINDOW, MAX_OBS, MAX_TGT)
    assert [tgt for _, tgt in long] == [list(range(8, 16)), list(range(16, 24)), list(range(24, 32))]
    assert long[-1][0] == list(range(16, 24)), "each step sees the most recent frames"


def test_interpolation_sees_frames_on_both_sides():
    observed, wanted = mode_frames("interpolate", 16, 8, interp_stride=4)
    assert observed == [0, 4, 8, 12, 15] and 15 not in wanted
    for obs, tgt in plan_video(observed, wanted, WINDOW, MAX_OBS, MAX_TGT):
        assert min(obs) < min(tgt) and max(obs) > max(tgt)


def test_hierarchical_does_keyframes_first():
    plan = plan_video(range(4), range(4, 16), WINDOW, MAX_OBS, MAX_TGT, "hierarchical", stride=3)
    assert plan[0] == ([0, 1, 2, 3], [4, 7, 10, 13])
    assert all(f % 3 == 1 for f in plan[0][1])


def test_relative_positions_and_refusals():
    assert relative([40, 41], [42, 45]) == ([0, 1], [2, 5])
    assert relative([], [30, 31]) == ([], [0, 1])
    with pytest.raises(UserError, match="sample.mode='dream'"):
        mode_frames("dream", 16, 8)
    with pytest.raises(UserError, match="cond_frames=16"):
        mode_frames("predict", 16, 16)
    with pytest.raises(UserError, match="interp_stride=1"):
        mode_frames("interpolate", 16, 8, interp_stride=1)
    with pytest.raises(UserError, match="sample.scheme"):
        plan_video([], range(4), WINDOW, MAX_OBS, MAX_TGT, "random")
    assert mode_frames("reconstruct", 5, 2) == (list(range(5)), list(range(5)))
