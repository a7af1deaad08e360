"""The generator's look after rendering: mirror-metal shading (tools/generator/metal.py: exact normals,
reflection lookups, repainting only the metal pixels) and soft floor shadows (render.soften_shadows)."""
from __future__ import annotations

import numpy as np
import pytest

from tools.generator.metal import (Environment, environment_light, pixel_points, sample_environment,
                                   shade_metal, surface_normals)
from tools.generator.render import soften_shadows
from tools.generator.scene import GeneratorSettings, RenderSettings, make_camera


def _rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_sphere_normals_point_away_from_the_centre():
    center = np.array([1.0, 2.0, 0.35])
    directions = np.random.default_rng(0).normal(size=(50, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    normals = surface_normals(center + 0.35 * directions, "sphere", np.array([0.35, 0, 0]), center,
                              _rotation_z(0.7))
    np.testing.assert_allclose(normals, directions, atol=1e-9)


def test_box_normals_are_the_rotated_face_axes():
    rotation = _rotation_z(np.pi / 6)
    center = np.array([0.5, -1.0, 0.3])
    half = np.array([0.3, 0.3, 0.3])
    # A point in the middle of the local +x face, one on the top face and one on the local -y face.
    local = np.array([[0.3, 0.05, -0.1], [0.1, -0.2, 0.3], [0.0, -0.3, 0.1]])
    normals = surface_normals(center + local @ rotation.T, "box", half, center, rotation)
    expected = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]) @ rotation.T
    np.testing.assert_allclose(normals, expected, atol=1e-9)


def test_cylinder_normals_are_radial_on_the_side_and_vertical_on_the_caps():
    center, size = np.zeros(3), np.array([0.35, 0.3, 0])
    points = np.array([[0.35, 0.0, 0.1], [0.0, -0.35, -0.2], [0.1, 0.1, 0.3], [0.05, 0.0, -0.3]])
    normals = surface_normals(points, "cylinder", size, center, np.eye(3))
    np.testing.assert_allclose(normals, [[1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], atol=1e-9)


def test_unknown_geom_type_is_refused():
    with pytest.raises(ValueError, match="capsule"):
        surface_normals(np.zeros((1, 3)), "capsule", np.ones(3), np.zeros(3), np.eye(3))


def test_pixel_points_lie_on_the_floor_where_the_depth_says_so():
    settings = GeneratorSettings(height=16, width=24)
    camera = make_camera(settings)
    rows, cols = np.array([10, 15]), np.array([3, 20])
    floor = np.array([camera.unproject(c + 0.5, r + 0.5) for r, c in zip(rows, cols)])
    depth = np.zeros((16, 24))
    depth[rows, cols] = (floor - camera.position) @ camera.forward
    points, view = pixel_points(camera, depth, rows, cols)
    np.testing.assert_allclose(points, floor, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(view, axis=1), 1.0)


def test_environment_is_darker_at_the_horizon_than_in_the_sky_and_lights_its_spots():
    env = Environment(floor=0.6, horizon=0.2, horizon_top=0.3, sky=1.1, spots=np.array([[0.0, 0.6, 0.8]]),
                      spot_sharpness=100.0, spot_strength=0.8, tint_gain=0.9, tint_offset=0.05)
    directions = np.array([[1.0, 0, 0.05], [0, 0, 1.0], [1.0, 0, -1.0], [0.0, 0.6, 0.8]])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    tinted, white = environment_light(env, directions)
    assert tinted[0] < tinted[2] < tinted[1]  # horizon < floor < sky
    assert white[3] == pytest.approx(0.8) and white[:3].max() < 0.05


def test_sampled_environment_is_a_function_of_the_seed():
    first, again = sample_environment(np.random.default_rng(5)), sample_environment(np.random.default_rng(5))
    np.testing.assert_array_equal(first.spots, again.spots)
    assert first.floor == again.floor
    assert sample_environment(np.random.default_rng(6)).floor != first.floor


def test_shading_repaints_only_the_object_pixels():
    settings = GeneratorSettings(height=32, width=48)
    camera = make_camera(settings)
    radius = 1.0  # large, so that the small frame shows many of its pixels
    center = camera.unproject(24, 16, z=radius)
    rows, cols = np.mgrid[0:32, 0:48]
    # Depth of the sphere's front surface where the pixel ray hits it (ray-sphere intersection).
    _, view = pixel_points(camera, np.ones((32, 48)), rows.ravel(), cols.ravel())
    to_center = center - camera.position
    along = view @ to_center
    gap = along ** 2 - (to_center @ to_center - radius ** 2)
    hit = gap > 0
    distance = np.where(hit, along - np.sqrt(np.maximum(gap, 0)), 0)
    depth = (distance[:, None] * view @ camera.forward).reshape(32, 48)
    pixels = hit.reshape(32, 48)
    frame = np.full((32, 48, 3), 100, dtype=np.uint8)
    shade_metal(frame, pixels, depth, camera, sample_environment(np.random.default_rng(0)), 5, "sphere",
                np.array([radius, 0, 0]), center, np.eye(3))
    assert pixels.sum() > 50
    assert (frame[~pixels] == 100).all()
    shaded = frame[pixels].astype(float)
    assert shaded.std(axis=0).max() > 10  # a mirror is not one flat colour
    assert (shaded[:, 1] >= shaded[:, 0]).mean() > 0.9  # cyan: green above red almost everywhere


def test_soft_shadows_blur_and_lighten_the_floor_and_leave_objects_alone():
    lit = np.full((20, 30, 3), 200, dtype=np.uint8)
    frame = lit.copy()
    frame[:, :15] = 100                    # a hard shadow over the left half, at half the light
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[8:12, 2:6] = 7                    # an object inside the shadow keeps its own shading
    soften_shadows(frame, mask, lit, RenderSettings(shadow_blur=2.0, shadow_strength=0.6))
    assert (frame[8:12, 2:6] == 100).all()
    row = frame[0, :, 0].astype(int)
    assert row[0] == 140                   # deep in the shadow: 200 * (1 - 0.6 * 0.5)
    assert row[-1] == 200                  # far from it: unchanged
    assert (np.diff(row) >= 0).all() and 140 < row[14] < row[15] < 200  # a gradual edge, not a step


def test_look_figures_recover_a_known_colour_fit_and_spread():
    from tools.generator.calibrate_look import look_figures
    from tools.data.classes import COLOR_RGB

    objects = [dict(material="metal", palette=np.asarray(rgb), mean=0.35 * np.asarray(rgb) + 35, spread=20.0 + i,
                    highlight=30.0) for i, rgb in enumerate(COLOR_RGB.values())]
    figures = look_figures(objects, [np.array([100.0, 130.0, 140.0])])
    assert figures["metal colour gain"] == pytest.approx(0.35)
    assert figures["metal colour offset"] == pytest.approx(35.0)
    assert figures["metal brightness spread"] == pytest.approx(23.5)
    assert figures["rubber objects"] == 0 and "rubber colour gain" not in figures
    assert figures["floor brightness"] == 130.0


def test_look_reads_a_dataset_roots_val_split_or_a_split_folder(tmp_path):
    from tools.generator.calibrate_look import labeled_video_dirs
    from tools.core.errors import UserError

    for split, ids in (("train", (0, 1)), ("val", (2, 10, 3))):
        for video_id in ids:
            (tmp_path / split / f"video_{video_id}").mkdir(parents=True)
            np.save(tmp_path / split / f"video_{video_id}" / "mask.npy", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "val" / "video_11").mkdir()  # unlabeled: left out
    assert [p.name for p in labeled_video_dirs(tmp_path, 10)] == ["video_2", "video_3", "video_10"]
    assert [p.name for p in labeled_video_dirs(tmp_path / "train", 1)] == ["video_0"]
    with pytest.raises(UserError, match="not a folder"):
        labeled_video_dirs(tmp_path / "missing", 5)
