"""Mirror-like metal, shaded after rendering from each pixel's reflection direction.

MuJoCo's renderer has no environment reflections on curved geoms (`reflectance` only mirrors planes), so
its metal looks like dark plastic. The real frames' metal is a tinted mirror of a studio: bright and
saturated where it reflects the sky and the lights, a dark band at the horizon, the grey floor below,
and small white highlights. Here, for every pixel of a metal object, the surface point comes from the
depth buffer, the normal from the object's pose and primitive shape (exact, unlike finite differences
of depth), and the colour from a procedural environment looked up along the reflected view ray. The
environment's parameters are drawn per video within the range the real frames show (domain
randomisation), so that a segmenter learns "metal" from the look rather than from one environment.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.data.classes import COLOR_RGB, COLORS
from tools.generator.scene import Camera


@dataclass(frozen=True)
class Environment:
    """The studio a metal object mirrors, as a function of the reflected direction's elevation,
    plus light spots; brightness values are fractions of the tint (1 = the full palette colour)."""
    floor: float            # reflected floor, below the horizon
    horizon: float          # the dark band just above the horizon
    horizon_top: float      # elevation sine where the band gives way to the sky
    sky: float              # straight up
    spots: np.ndarray       # (K, 3) unit directions of the lights' highlights
    spot_sharpness: float   # exponent of the highlight lobes: higher is smaller
    spot_strength: float    # white added at a highlight's centre, 0..1 of full white
    tint_gain: float        # metal colour = palette * tint_gain + tint_offset (0..1 units)
    tint_offset: float
    ripple: float = 0.0     # brightness varies with azimuth by 1 +- ripple (softboxes around the studio:
    ripple_cycles: int = 1  # the vertical stripes on metal cylinders), with this many cycles per turn
    ripple_phase: float = 0.0


def sample_environment(rng: np.random.Generator) -> Environment:
    """One video's studio, drawn around what the real frames' metal objects show."""
    count = int(rng.integers(2, 4))
    azimuth = rng.uniform(0, 2 * np.pi, count)
    elevation = rng.uniform(0.35, 1.3, count)
    spots = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                      np.sin(elevation)], axis=1)
    return Environment(floor=rng.uniform(0.5, 0.85), horizon=rng.uniform(0.15, 0.45),
                       horizon_top=rng.uniform(0.1, 0.35), sky=rng.uniform(0.9, 1.3), spots=spots,
                       spot_sharpness=rng.uniform(40, 200), spot_strength=rng.uniform(0.7, 1.1),
                       tint_gain=rng.uniform(0.33, 0.45), tint_offset=rng.uniform(0.12, 0.22),
                       ripple=rng.uniform(0.1, 0.4), ripple_cycles=int(rng.integers(1, 4)),
                       ripple_phase=rng.uniform(0, 2 * np.pi))


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def environment_light(env: Environment, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tinted brightness, white highlight) along unit directions (N, 3), world frame with z up."""
    z = direction[:, 2]
    above = _smoothstep(-0.06, 0.02, z)  # floor below, horizon band above, blended over a few degrees
    sky = _smoothstep(env.horizon_top - 0.1, env.horizon_top + 0.15, z)
    upper = env.horizon + (env.sky - env.horizon) * sky
    # The floor's reflection darkens toward the horizon, where it reflects the far floor.
    floor = env.floor * (0.6 + 0.4 * np.clip(-z / 0.5, 0.0, 1.0))
    azimuth = np.arctan2(direction[:, 1], direction[:, 0])
    ripple = 1 + env.ripple * np.cos(env.ripple_cycles * azimuth + env.ripple_phase)
    tinted = (floor + (upper - floor) * above) * ripple
    lobes = np.clip(direction @ env.spots.T, 0.0, 1.0) ** env.spot_sharpness
    return tinted, env.spot_strength * lobes.max(axis=1)


def metal_tint(color: int, env: Environment) -> np.ndarray:
    """The mirror's colour (0..1). Averaged over an object, the real frames' metal is about 0.35 x palette + 35
    (0..255; measured per colour on the real samples), as dull as their rubber: what sets it apart is its
    contrast (brightness spread about twice rubber's), not its colour."""
    palette = np.asarray(COLOR_RGB[COLORS[color]], dtype=float) / 255.0
    return np.clip(palette * env.tint_gain + env.tint_offset, 0.0, 1.0)


def surface_normals(points: np.ndarray, geom_type: str, size: np.ndarray, center: np.ndarray,
                    rotation: np.ndarray) -> np.ndarray:
    """Unit outward normals (N, 3, world frame) at points (N, 3) on a box, sphere or cylinder geom.

    `size` is MuJoCo's geom size (half extents; radius; radius and half height), `rotation` the geom's
    3x3 orientation (columns are its axes in the world frame)."""
    local = (points - center) @ rotation
    if geom_type == "sphere":
        normal = local
    elif geom_type == "box":
        # The face a point lies on is the axis where it is relatively farthest out.
        axis = np.argmax(np.abs(local) / size[:3], axis=1)
        normal = np.zeros_like(local)
        rows = np.arange(len(local))
        normal[rows, axis] = np.sign(local[rows, axis])
    elif geom_type == "cylinder":
        radius, half_height = float(size[0]), float(size[1])
        radial = np.linalg.norm(local[:, :2], axis=1)
        on_cap = np.abs(local[:, 2]) / half_height > radial / radius
        normal = np.where(on_cap[:, None], np.stack([np.zeros_like(radial), np.zeros_like(radial),
                                                      np.sign(local[:, 2])], axis=1),
                          np.concatenate([local[:, :2], np.zeros_like(local[:, :1])], axis=1))
    else:
        raise ValueError(f"no normals for geom type {geom_type!r}")
    normal = normal @ rotation.T
    return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)


def pixel_points(camera: Camera, depth: np.ndarray, rows: np.ndarray, cols: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) and unit view directions (N, 3) of pixels, from a depth buffer along the
    camera's forward axis (what MuJoCo's depth rendering gives)."""
    rays = camera.pixel_ray(cols + 0.5, rows + 0.5)
    points = camera.position[None] + depth[rows, cols][:, None] * rays
    return points, rays / np.linalg.norm(rays, axis=1, keepdims=True)


def shade_metal(rgb: np.ndarray, pixels: np.ndarray, depth: np.ndarray, camera: Camera, env: Environment,
                color: int, geom_type: str, size: np.ndarray, center: np.ndarray, rotation: np.ndarray
                ) -> None:
    """Repaint one metal object's pixels (boolean (H, W) `pixels`) of a uint8 frame in place."""
    rows, cols = np.nonzero(pixels)
    if len(rows) == 0:
        return
    points, view = pixel_points(camera, depth, rows, cols)
    normal = surface_normals(points, geom_type, size, center, rotation)
    reflected = view - 2 * np.sum(view * normal, axis=1, keepdims=True) * normal
    tinted, white = environment_light(env, reflected)
    # Schlick's Fresnel term: toward grazing angles a metal reflects more, and less tinted.
    grazing = 0.5 * (1 - np.clip(-np.sum(view * normal, axis=1, keepdims=True), 0.0, 1.0)) ** 5
    tint = metal_tint(color, env)[None]
    colour = (tint + (1 - tint) * grazing) * tinted[:, None] + white[:, None]
    rgb[rows, cols] = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
