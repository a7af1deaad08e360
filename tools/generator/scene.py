"""Sample a CLEVRER-like physics scene from a seed and build its MuJoCo model (MJCF XML).

A scene is a floor seen by a fixed camera from above and in front, with 3 to 8 objects, each a
distinct (shape, material, color) combination so that a class id names one instance. Objects are
either standing still, sliding/rolling from the first frame, or waiting just outside the camera's
view until they are launched into it at a sampled frame ("entering" objects).

Geometry convention: z up, floor at z = 0, the camera looks along +y. Lengths are in metres.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from tools.data.classes import NUM_CLASSES, class_id, class_indices


# ----------------------------------------------------------------------------------------------
# Settings (the generator's config, validated by OmegaConf against these dataclasses)
# ----------------------------------------------------------------------------------------------
@dataclass
class CameraSettings:
    distance: float = 7.5         # from the look-at point, metres
    elevation_deg: float = 38.0    # angle below the horizon of the viewing direction
    fovy_deg: float = 40.0
    target_y: float = 0.0          # look-at point on the floor is (0, target_y, 0)


@dataclass
class SceneSettings:
    object_size: float = 0.35           # sphere radius; cubes and cylinders are scaled alike
    static_probability: float = 0.65    # chance that an object in view at frame 1 stands still
    speed_min: float = 3.0              # m/s of objects moving from the first frame
    speed_max: float = 6.5
    enter_speed_min: float = 6.0        # m/s of objects launched into the view (fast: they
    enter_speed_max: float = 10.0       # arrive fast and slow down inside the view)
    entering_weights: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.3])  # P(0,1,2 enter)
    enter_frame_min: int = 1            # launch frame range (0-based, inclusive)
    enter_frame_max: int = 14
    # Entering objects come in over the top, bottom, left and right image edges with these weights.
    edge_weights: list[float] = field(default_factory=lambda: [0.35, 0.1, 0.275, 0.275])
    aim_at_still_probability: float = 0.9  # chance a moving object heads for a still one
    friction: float = 0.1               # sliding (Coulomb) friction, object-floor and object-object
    torsional_friction: float = 0.0001  # stops objects spinning about the vertical (metres)
    rolling_friction: float = 0.1       # slows rolling spheres (metres; 0.7 g x this / radius)
    linear_damping: float = 0.4         # 1/s: horizontal velocity lost per second, as a rate


@dataclass
class PhysicsSettings:
    frame_seconds: float = 0.1     # simulated time between two frames
    timestep: float = 0.0025


@dataclass
class RenderSettings:
    gl: str = "auto"               # auto (egl then osmesa), egl or osmesa
    shadow_size: int = 1024
    offsamples: int = 4
    mirror_metal: bool = True      # shade metal as a mirror of a studio drawn per video (metal.py)
    shadow_blur: float = 3.0       # pixels (Gaussian sigma) the floor's shadows are softened by; 0 = hard
    shadow_strength: float = 0.75  # a softened shadow's darkness relative to the hard one


@dataclass
class Counts:
    train: int = 200
    val: int = 50
    unlabeled: int = 200
    hidden: int = 50


@dataclass
class GeneratorSettings:
    seed: int = 0
    counts: Counts = field(default_factory=Counts)
    height: int = 160
    width: int = 240
    frames: int = 22
    hidden_frames: int = 11
    workers: int = 2
    masks_only: bool = False  # write mask.npy only (trajectories for the slot route's stage 2), no frames
    min_objects: int = 3
    max_objects: int = 8
    camera: CameraSettings = field(default_factory=CameraSettings)
    scene: SceneSettings = field(default_factory=SceneSettings)
    physics: PhysicsSettings = field(default_factory=PhysicsSettings)
    render: RenderSettings = field(default_factory=RenderSettings)


# ----------------------------------------------------------------------------------------------
# Camera geometry (also used to place objects relative to the image edges)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    position: np.ndarray
    forward: np.ndarray
    right: np.ndarray
    up: np.ndarray
    fovy_deg: float
    height: int
    width: int

    def pixel_ray(self, u: float | np.ndarray, v: float | np.ndarray) -> np.ndarray:
        """Direction (..., 3) of the ray through pixel coordinates (u right, v down, 0..width/height), with a
        forward component of 1 (so a depth along the forward axis scales it to the point); u and v may be
        arrays of one shape."""
        half = math.tan(math.radians(self.fovy_deg) / 2)
        x = (np.asarray(u, dtype=float) - self.width / 2) / (self.height / 2) * half
        y = -(np.asarray(v, dtype=float) - self.height / 2) / (self.height / 2) * half
        return self.forward + x[..., None] * self.right + y[..., None] * self.up

    def unproject(self, u: float, v: float, z: float = 0.0) -> np.ndarray:
        """The point at height z seen at pixel (u, v)."""
        ray = self.pixel_ray(u, v)
        if ray[2] >= 0:
            raise ValueError(f"pixel ({u}, {v}) looks above the horizon")
        t = (z - self.position[2]) / ray[2]
        return self.position + t * ray

    def project(self, point: np.ndarray) -> tuple[float, float]:
        """Pixel coordinates (u, v) of a world point in front of the camera."""
        rel = np.asarray(point, dtype=float) - self.position
        depth = rel @ self.forward
        half = math.tan(math.radians(self.fovy_deg) / 2)
        x = (rel @ self.right) / depth / half
        y = (rel @ self.up) / depth / half
        return self.width / 2 + x * self.height / 2, self.height / 2 - y * self.height / 2


def make_camera(settings: GeneratorSettings) -> Camera:
    """The fixed camera: above and in front of the floor, looking down along +y."""
    cam = settings.camera
    elevation = math.radians(cam.elevation_deg)
    target = np.array([0.0, cam.target_y, 0.0])
    forward = np.array([0.0, math.cos(elevation), -math.sin(elevation)])
    position = target - cam.distance * forward
    right = np.array([1.0, 0.0, 0.0])
    up = np.cross(right, forward)
    return Camera(position, forward, right, up, cam.fovy_deg, settings.height, settings.width)


# ----------------------------------------------------------------------------------------------
# Scene sampling
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectSpec:
    shape: int
    material: int
    color: int
    position: tuple[float, float]          # floor coordinates of the centre at frame 0
    yaw: float                             # radians about z
    velocity: tuple[float, float]          # m/s, applied at `launch_frame`
    launch_frame: int                      # 0 for objects in view from the start

    @property
    def class_id(self) -> int:
        return class_id(self.shape, self.material, self.color)


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    look_seed: int = 0                     # seeds the per-video look (tools/generator/metal.py)


def _heading(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)])


def _velocity(rng: np.random.Generator, low: float, high: float, heading: np.ndarray
              ) -> tuple[float, float]:
    speed = rng.uniform(low, high)
    return float(speed * heading[0]), float(speed * heading[1])


def _free_spot(rng: np.random.Generator, camera: Camera, taken: list[np.ndarray],
               clearance: float, tries: int = 200) -> np.ndarray | None:
    """A floor point well inside the image, at least `clearance` from every taken point."""
    for _ in range(tries):
        u = rng.uniform(0.08, 0.92) * camera.width
        v = rng.uniform(0.15, 0.92) * camera.height
        point = camera.unproject(u, v)[:2]
        if all(np.linalg.norm(point - other) >= clearance for other in taken):
            return point
    return None


def _edge_point(rng: np.random.Generator, camera: Camera, sc: SceneSettings) -> np.ndarray:
    """A floor point on an image edge (top, bottom, left or right, by `sc.edge_weights`)."""
    w, h = camera.width, camera.height
    weights = np.asarray(sc.edge_weights, dtype=float)
    edge = int(rng.choice(4, p=weights / weights.sum()))
    along = rng.uniform(0.1, 0.9)
    pixel = [(along * w, 0.0), (along * w, float(h)), (0.0, 0.1 * h + 0.65 * along * h),
             (float(w), 0.1 * h + 0.65 * along * h)][edge]
    return camera.unproject(*pixel)[:2]


AIM_SPREAD = 0.6


def _aim(rng: np.random.Generator, camera: Camera, origin: np.ndarray, still: list[np.ndarray],
         sc: SceneSettings) -> np.ndarray:
    """Unit heading from `origin`: often toward a still object, so that it gets hit as in the
    real clips (off-centre by up to AIM_SPREAD object sizes: glancing blows too), else to a
    random point in the middle of the view."""
    if still and rng.uniform() < sc.aim_at_still_probability:
        spread = rng.uniform(-1, 1, 2) * AIM_SPREAD * sc.object_size
        target = still[int(rng.integers(len(still)))] + spread
    else:
        w, h = camera.width, camera.height
        target = camera.unproject(rng.uniform(0.25, 0.75) * w, rng.uniform(0.35, 0.85) * h)[:2]
    offset = target - origin
    return offset / max(float(np.linalg.norm(offset)), 1e-9)


def _in_view_objects(rng: np.random.Generator, camera: Camera, classes: list[int],
                     sc: SceneSettings, taken: list[np.ndarray]) -> list[ObjectSpec]:
    """Objects in view at frame 0: still ones first (others aim at them), then moving ones."""
    placed = []
    for cid in classes:
        start = _free_spot(rng, camera, taken, 2.6 * sc.object_size)
        if start is None:  # the view is full: fewer objects rather than overlapping ones
            continue
        taken.append(start)
        placed.append((cid, start, bool(rng.uniform() < sc.static_probability)))
    still = [start for _, start, is_still in placed if is_still]
    objects = []
    for cid, start, is_still in sorted(placed, key=lambda item: not item[2]):
        velocity = (0.0, 0.0)
        if not is_still:
            heading = _aim(rng, camera, start, still, sc) if still else _heading(rng)
            velocity = _velocity(rng, sc.speed_min, sc.speed_max, heading)
        objects.append(_object(rng, cid, start, velocity, 0))
    return objects


def _entering_object(rng: np.random.Generator, camera: Camera, cid: int, sc: SceneSettings,
                     still: list[np.ndarray]) -> ObjectSpec:
    """An object waiting beyond an image edge, launched into the view at a sampled frame."""
    edge_point = _edge_point(rng, camera, sc)
    heading = _aim(rng, camera, edge_point, still, sc)
    # Far enough out that neither the object nor its top edge shows at frame 0.
    start = edge_point - heading * 3.0 * sc.object_size
    velocity = _velocity(rng, sc.enter_speed_min, sc.enter_speed_max, heading)
    launch = int(rng.integers(sc.enter_frame_min, sc.enter_frame_max + 1))
    return _object(rng, cid, start, velocity, launch)


def _object(rng: np.random.Generator, cid: int, start: np.ndarray, velocity: tuple[float, float],
            launch: int) -> ObjectSpec:
    shape, material, color = class_indices(int(cid))
    yaw = float(rng.uniform(0, 2 * math.pi))
    return ObjectSpec(shape, material, color, (float(start[0]), float(start[1])), yaw, velocity,
                      launch)


def sample_scene(rng: np.random.Generator, settings: GeneratorSettings) -> SceneSpec:
    """Draw one scene: object classes (no duplicates), placements, motions and entry frames."""
    sc = settings.scene
    camera = make_camera(settings)
    count = int(rng.integers(settings.min_objects, settings.max_objects + 1))
    classes = [int(c) for c in rng.choice(NUM_CLASSES - 1, size=count, replace=False) + 1]
    weights = np.asarray(sc.entering_weights, dtype=float)
    entering = min(int(rng.choice(len(weights), p=weights / weights.sum())), count - 1)
    objects = _in_view_objects(rng, camera, classes[entering:], sc, [])
    still = [np.asarray(o.position) for o in objects if o.velocity == (0.0, 0.0)]
    objects += [_entering_object(rng, camera, cid, sc, still) for cid in classes[:entering]]
    objects = _ensure_motion(rng, objects, sc)
    # Drawn last, so that adding it left every earlier scene's objects and motions as they were.
    return SceneSpec(tuple(objects), look_seed=int(rng.integers(2**31)))


def _ensure_motion(rng: np.random.Generator, objects: list[ObjectSpec], sc: SceneSettings
                   ) -> list[ObjectSpec]:
    """Real clips always show some motion: if nothing would move, set one object moving."""
    if not objects or any(o.velocity != (0.0, 0.0) for o in objects):
        return objects
    index = int(rng.integers(len(objects)))
    velocity = _velocity(rng, sc.speed_min, sc.speed_max, _heading(rng))
    objects[index] = dataclasses.replace(objects[index], velocity=velocity)
    return objects
