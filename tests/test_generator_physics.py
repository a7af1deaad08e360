"""The generator's physics, simulated without rendering: objects slide to rest, hits start still
objects, and a simulation is a function of its scene alone."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tools.data.classes import SHAPES
from tools.generator import settings_from_config
from tools.generator.generate import scene_for
from tools.generator.physics import simulate_positions
from tools.generator.scene import ObjectSpec, SceneSpec, make_camera

SETTINGS = settings_from_config({})
CAMERA = make_camera(SETTINGS)
CENTRE = tuple(CAMERA.unproject(SETTINGS.width / 2, SETTINGS.height / 2)[:2])
HEADINGS = [2 * math.pi * k / 8 for k in range(8)]
AT_REST = 0.05        # m/s: under 0.2 px/frame anywhere in the view
SLACK = 1e-3          # m/s of solver noise allowed when checking that speed never rises


def alone(shape: int, velocity: tuple[float, float], position=CENTRE) -> SceneSpec:
    return SceneSpec((ObjectSpec(shape, 1, 1, position, 0.3, velocity, 0),))


def horizontal_speeds(positions: np.ndarray) -> np.ndarray:
    """(T-1,) m/s of one object's centre between consecutive frames."""
    step = np.linalg.norm(np.diff(positions[:, :2], axis=0), axis=1)
    return step / SETTINGS.physics.frame_seconds


def in_view(position: np.ndarray) -> bool:
    u, v = CAMERA.project(position)
    return 0 <= u <= SETTINGS.width and 0 <= v <= SETTINGS.height


@pytest.mark.parametrize("shape", range(len(SHAPES)), ids=SHAPES)
def test_a_slow_launch_decelerates_monotonically_and_stops_within_the_clip(shape):
    speed = SETTINGS.scene.speed_min
    for heading in HEADINGS:
        velocity = (speed * math.cos(heading), speed * math.sin(heading))
        positions = simulate_positions(alone(shape, velocity), SETTINGS)[:, 0]
        speeds = horizontal_speeds(positions)
        assert speeds[0] > 0.7 * speed, (SHAPES[shape], heading)        # it was launched
        assert np.all(np.diff(speeds) <= SLACK), (SHAPES[shape], heading, speeds)
        assert speeds[-1] < AT_REST or not in_view(positions[-1]), (SHAPES[shape], heading, speeds)


@pytest.mark.parametrize("shape", range(len(SHAPES)), ids=SHAPES)
def test_a_fast_launch_decelerates_monotonically_and_loses_most_of_its_speed(shape):
    speed = SETTINGS.scene.speed_max
    for heading in HEADINGS[::2]:
        velocity = (speed * math.cos(heading), speed * math.sin(heading))
        positions = simulate_positions(alone(shape, velocity), SETTINGS)[:, 0]
        speeds = horizontal_speeds(positions)
        assert np.all(np.diff(speeds) <= SLACK), (SHAPES[shape], heading, speeds)
        assert speeds[-1] < 0.3 * speed or not in_view(positions[-1]), (SHAPES[shape], heading)


@pytest.mark.parametrize("still_shape", range(len(SHAPES)), ids=SHAPES)
def test_a_still_object_hit_by_a_moving_one_starts_moving(still_shape):
    centre = np.asarray(CENTRE)
    mover_start = centre - np.array([1.4, 0.0])       # two object widths to its left
    spec = SceneSpec((
        ObjectSpec(still_shape, 1, 2, tuple(centre), 0.0, (0.0, 0.0), 0),
        ObjectSpec(0, 0, 1, tuple(mover_start), 0.0, (SETTINGS.scene.speed_min, 0.0), 0),
    ))
    positions = simulate_positions(spec, SETTINGS)
    still_track = positions[:, 0, :2]
    assert np.allclose(still_track[1], centre, atol=1e-3)       # untouched before the hit
    assert still_track[-1, 0] - centre[0] > 0.3                  # pushed along the mover's path
    assert horizontal_speeds(positions[:, 0]).max() > 0.5       # it really moved


def test_without_a_hit_a_still_object_stays_put():
    centre = np.asarray(CENTRE)
    spec = SceneSpec((
        ObjectSpec(0, 1, 2, tuple(centre), 0.0, (0.0, 0.0), 0),
        ObjectSpec(0, 0, 1, tuple(centre - np.array([1.4, 0.0])), 0.0, (-3.0, 0.0), 0),
    ))
    positions = simulate_positions(spec, SETTINGS)
    assert np.allclose(positions[:, 0, :2], centre, atol=1e-3)


def test_simulation_is_a_function_of_the_scene():
    spec = scene_for(SETTINGS, 7)
    first, second = simulate_positions(spec, SETTINGS), simulate_positions(spec, SETTINGS)
    assert np.array_equal(first, second)
    assert not np.array_equal(first[0], first[-1])               # something moved
