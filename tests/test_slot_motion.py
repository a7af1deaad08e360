"""The slot route's motion pieces: the friction prior the targets are anchored on, the closest-approach
neighbours and the motion head whose guess the diffusion works around."""
from __future__ import annotations

import torch

from models.slot_transformer import NEIGHBOUR_FEATURES, SlotTransformer, neighbour_features
from models.slots import mask_states
from tools.diffusion.slot_frames import MotionPrior, shift_by_motion, slot_condition
from tools.train.slot_ddpm import motion_l1


def _moving_squares(steps_px: list[float], frames: int = 11) -> torch.Tensor:
    """Masks [1, frames, 60, 120] of one 6 x 6 square per speed, class 1 + i, moving right at a constant speed."""
    masks = torch.zeros(1, frames, 60, 120, dtype=torch.uint8)
    for i, speed in enumerate(steps_px):
        for t in range(frames):
            left = round(4 + speed * t)
            masks[0, t, 4 + 12 * i:10 + 12 * i, left:left + 6] = 1 + i
    return masks


def _condition(masks: torch.Tensor, targets: list[int], prior: MotionPrior | float):
    states = mask_states(masks)
    frames = masks.shape[1]
    return slot_condition(states, torch.zeros(1, 48, 64), torch.arange(frames)[None],
                          torch.ones(1, frames, dtype=torch.bool), torch.tensor([targets]), torch.ones(7), prior)


def test_friction_prior_stops_slow_objects_and_carries_fast_ones_on():
    prior = MotionPrior(decay=0.93, friction=0.15, pixels=(60.0, 30.0))  # a 120 x 60 image
    cond, slots = _condition(_moving_squares([1.0, 4.0]), [11, 21], prior)
    for cls, speed in ((1, 1.0), (2, 4.0)):
        expected, velocity, covered = [], speed, 0.0
        for ahead in range(1, 12):
            velocity = max(0.0, 0.93 * velocity - 0.15)
            covered += velocity
            expected.append(covered)
        slot = slots[0].tolist().index(cls - 1)
        moved_px = (cond.anchor[0, :, slot, 1] - cond.reference[0, slot, 1]) * 60
        assert torch.allclose(moved_px, torch.tensor([expected[0], expected[10]]), atol=1e-3)
        assert torch.allclose(cond.anchor[0, :, slot, 2:], cond.reference[0, slot, 2:].expand(2, -1))
        assert torch.allclose(cond.velocity[0, slot, 1] * 60, torch.tensor(speed), atol=1e-4)
    slow = slots[0].tolist().index(0)
    stopped = (cond.anchor[0, 1, slow, 1] - cond.reference[0, slow, 1]) * 60
    assert 1.9 < stopped < 2.0  # 1 px/frame stops after six frames (0.78 + 0.575 + ...); decay alone: 7.7 px
    # friction 0 is the pure decay of before
    pure, _ = _condition(_moving_squares([4.0]), [21], MotionPrior(decay=0.85, pixels=(60.0, 30.0)))
    same, _ = _condition(_moving_squares([4.0]), [21], 0.85)
    assert torch.allclose(pure.anchor, same.anchor)


def test_neighbours_are_ranked_by_closest_approach_and_skip_padding():
    position = torch.tensor([[[-0.5, 0.0], [0.5, 0.0], [-0.4, 0.5], [0.0, 0.0]]])
    velocity = torch.tensor([[[0.05, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True, True, False]])  # slot 3 is padding, though it sits on slot 0's path
    features = neighbour_features(position, velocity, torch.zeros(1, 4), valid, k=3)
    assert features.shape == (1, 4, 3 * NEIGHBOUR_FEATURES)
    first, second, third = features[0, 0].view(3, NEIGHBOUR_FEATURES)
    # slot 1 is 1.0 ahead on slot 0's path (0.45 left after 11 frames); slot 2 is 0.51 away but off the path
    assert torch.allclose(first[:2], torch.tensor([1.0, 0.0])) and abs(first[5].item() - 0.45) < 1e-5
    assert torch.allclose(second[:2], torch.tensor([0.1, 0.5]))
    assert first[7] == 1 and second[7] == 1 and torch.count_nonzero(third) == 0  # only two real others
    assert torch.count_nonzero(features[0, 3]) == 0 or valid[0, 3]  # padding has no neighbours either


def test_motion_head_starts_at_the_anchor_learns_a_fixed_batch_and_shifts_round_trip():
    torch.manual_seed(0)
    cond, slots = _condition(_moving_squares([1.0, 3.0, 6.0]), [21], MotionPrior(0.93, 0.15, (60.0, 30.0)))
    model = SlotTransformer(width=32, depth=1, context_depth=1, heads=2, motion_head=True)
    motion = model.motion(cond)
    assert motion.shape == (1, 1, 3, 2) and torch.count_nonzero(motion) == 0  # zero-initialised: the prior
    target = torch.zeros(1, 1, 3, 7)
    target[..., 1:3] = torch.tensor([[0.3, -0.2], [-0.5, 0.1], [0.2, 0.4]])
    valid = cond.valid
    optimizer = torch.optim.Adam(model.motion_head.parameters(), lr=3e-3)
    first = motion_l1(model.motion(cond), target, valid).item()
    for _ in range(150):
        loss = motion_l1(model.motion(cond), target, valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first
    # an object gone in the target (presence -2 in model units) is not part of the loss
    gone = target.clone()
    gone[0, 0, 0] = torch.tensor([-2.0, 9.0, 9.0, 0, 0, 0, 0])
    assert abs(motion_l1(model.motion(cond), gone, valid).item() - motion_l1(
        model.motion(cond)[:, :, 1:], target[:, :, 1:], valid[:, 1:]).item()) < 1e-6
    guess = model.motion(cond).detach()
    residual = shift_by_motion(target, guess, -1.0)
    assert torch.allclose(residual[..., 3:], target[..., 3:]) and torch.allclose(shift_by_motion(residual, guess, 1.0),
                                                                                 target, atol=1e-6)
    # the denoiser runs with the head and returns its guess in the same call
    out, returned = model(torch.randn(1, 1, 3, 7), torch.tensor([500.0]), cond, with_motion=True)
    assert out.shape == (1, 1, 3, 7) and torch.equal(returned, model.motion(cond))
