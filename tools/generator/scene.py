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

from tools.data.classes import COLOR_RGB, COLORS, MATERIALS, NUM_CLASSES, SHAPES, class_id, class_indices


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
    static_probability: float = 0.6     # chance that an object in view at frame 1 stands still
    speed_min: float = 2.0              # m/s of objects moving from the first frame
    speed_max: float = 4.5
    enter_speed_min: float = 2.5        # m/s of objects launched into the view
    enter_speed_max: float = 4.5
    entering_weights: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.3])  # P(0,1,2 enter)
    enter_frame_min: int = 1            # launch frame range (0-based, inclusive)
    enter_frame_max: int = 14
    top_edge_probability: float = 0.5   # else left or right edge, equally
    friction: float = 0.05


@dataclass
class PhysicsSettings:
    frame_seconds: float = 0.1     # simulated time between two frames
    timestep: float = 0.0025


@dataclass
class RenderSettings:
    gl: str = "auto"               # auto (egl then osmesa), egl or osmesa
    shadow_size: int = 1024
    offsamples: int = 4


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

    def pixel_ray(self, u: float, v: float) -> np.ndarray:
        """Direction of the ray through pixel coordinates (u right, v down, 0..width/height)."""
        half = math.tan(math.radians(self.fovy_deg) / 2)
        x = (u - self.width / 2) / (self.height / 2) * half
        y = -(v - self.height / 2) / (self.height / 2) * half
        return self.forward + x * self.right + y * self.up

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


def _random_velocity(rng: np.random.Generator, low: float, high: float,
                     direction: np.ndarray | None = None) -> tuple[float, float]:
    speed = rng.uniform(low, high)
    if direction is None:
        angle = rng.uniform(0, 2 * math.pi)
        direction = np.array([math.cos(angle), math.sin(angle)])
    return float(speed * direction[0]), float(speed * direction[1])


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


def _edge_start(rng: np.random.Generator, camera: Camera, settings: SceneSettings
                ) -> tuple[np.ndarray, np.ndarray]:
    """Where an entering object waits (hidden beyond an image edge) and its unit heading."""
    w, h = camera.width, camera.height
    side = rng.uniform()
    if side < settings.top_edge_probability:
        edge_pixel = (rng.uniform(0.1, 0.9) * w, 0.0)
    elif side < (1 + settings.top_edge_probability) / 2:
        edge_pixel = (0.0, rng.uniform(0.1, 0.75) * h)
    else:
        edge_pixel = (float(w), rng.uniform(0.1, 0.75) * h)
    edge_point = camera.unproject(*edge_pixel)[:2]
    aim = camera.unproject(rng.uniform(0.25, 0.75) * w, rng.uniform(0.35, 0.85) * h)[:2]
    heading = (aim - edge_point) / np.linalg.norm(aim - edge_point)
    # Far enough out that neither the object nor its top edge shows at frame 0.
    start = edge_point - heading * 3.0 * settings.object_size
    return start, heading


def sample_scene(rng: np.random.Generator, settings: GeneratorSettings) -> SceneSpec:
    """Draw one scene: object classes (no duplicates), placements, motions and entry frames."""
    sc = settings.scene
    camera = make_camera(settings)
    count = int(rng.integers(settings.min_objects, settings.max_objects + 1))
    classes = rng.choice(NUM_CLASSES - 1, size=count, replace=False) + 1
    weights = np.asarray(sc.entering_weights, dtype=float)
    entering = min(int(rng.choice(len(weights), p=weights / weights.sum())), count - 1)
    clearance = 2.6 * sc.object_size
    taken: list[np.ndarray] = []
    objects = []
    for index, cid in enumerate(classes):
        shape, material, color = class_indices(int(cid))
        yaw = float(rng.uniform(0, 2 * math.pi))
        if index < entering:
            start, heading = _edge_start(rng, camera, sc)
            velocity = _random_velocity(rng, sc.enter_speed_min, sc.enter_speed_max, heading)
            launch = int(rng.integers(sc.enter_frame_min, sc.enter_frame_max + 1))
        else:
            start = _free_spot(rng, camera, taken, clearance)
            if start is None:  # the view is full: fewer objects rather than overlapping ones
                continue
            still = rng.uniform() < sc.static_probability
            velocity = (0.0, 0.0) if still else _random_velocity(rng, sc.speed_min, sc.speed_max)
            launch = 0
        taken.append(start)
        objects.append(ObjectSpec(shape, material, color, (float(start[0]), float(start[1])),
                                  yaw, velocity, launch))
    return SceneSpec(tuple(_ensure_motion(rng, objects, sc)))


def _ensure_motion(rng: np.random.Generator, objects: list[ObjectSpec], sc: SceneSettings
                   ) -> list[ObjectSpec]:
    """Real clips always show some motion: if nothing would move, set one object moving."""
    if not objects or any(o.velocity != (0.0, 0.0) for o in objects):
        return objects
    index = int(rng.integers(len(objects)))
    velocity = _random_velocity(rng, sc.speed_min, sc.speed_max)
    objects[index] = dataclasses.replace(objects[index], velocity=velocity)
    return objects


# ----------------------------------------------------------------------------------------------
# MJCF
# ----------------------------------------------------------------------------------------------
def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _geom_shape(shape: int, size: float) -> tuple[str, list[float], float]:
    """MuJoCo geom type, size and centre height of a shape."""
    name = SHAPES[shape]
    if name == "cube":
        half = size * 0.95  # a cube looks about as big as a sphere of radius `size`
        return "box", [half, half, half], half
    if name == "sphere":
        return "sphere", [size], size
    return "cylinder", [size, size * 0.9], size * 0.9


# The real frames are much less saturated than CLEVR's palette: measured on the real samples,
# rubber renders at about 0.34 * palette + 45 (0..255). Base colours are chosen to land there.
PALETTE_GAIN, PALETTE_OFFSET = 0.34, 45.0
RUBBER_SHADING = 0.76        # rendered / base colour of lit rubber under our lights, measured
METAL_DARKENING = 0.8        # metal reads as metal only with a darker base (plus specular)


def base_rgb(color: int, material: int) -> np.ndarray:
    """The MuJoCo base colour (0..1) of an object of this colour and material."""
    palette = np.asarray(COLOR_RGB[COLORS[color]], dtype=float)
    rgb = (PALETTE_GAIN * palette + PALETTE_OFFSET) / 255.0 / RUBBER_SHADING
    if MATERIALS[material] == "metal":
        rgb = rgb * METAL_DARKENING
    return np.clip(rgb, 0.0, 1.0)


def _material_xml(index: int, obj: ObjectSpec) -> str:
    rgb = base_rgb(obj.color, obj.material)
    if MATERIALS[obj.material] == "metal":
        # Highlight strength (98th percentile / median brightness of an object) measured as in
        # the real samples: about 1.9 for metal and 1.4 for rubber.
        look = 'specular="1" shininess="0.4" reflectance="0.4"'
    else:
        look = 'specular="0.12" shininess="0.1" reflectance="0"'
    return f'<material name="mat{index}" rgba="{_fmt(rgb)} 1" {look}/>'


def _body_xml(index: int, obj: ObjectSpec, size: float, friction: float) -> str:
    gtype, gsize, z = _geom_shape(obj.shape, size)
    half_yaw = obj.yaw / 2
    quat = (math.cos(half_yaw), 0.0, 0.0, math.sin(half_yaw))
    pos = (obj.position[0], obj.position[1], z)
    return (f'<body name="obj{index}" pos="{_fmt(pos)}" quat="{_fmt(quat)}"><freejoint/>'
            f'<geom name="obj{index}" type="{gtype}" size="{_fmt(gsize)}" material="mat{index}"'
            f' friction="{friction:.6g} 0.005 0.0001"/></body>')


# Key light from the right and slightly behind the scene: shadows fall left and toward the camera,
# as in the real data. One shadow-casting light, because each one costs a shadow-map pass; its
# large bulb radius softens the shadow edges as in the real frames.
KEY_LIGHT_DIRECTION = (-0.58, -0.32, -0.75)
KEY_LIGHT_DIFFUSE = 0.32
FILL_LIGHT = ((0.0, -3.0, 4.0), 0.3)   # position, diffuse


def _lights_xml(center: np.ndarray) -> str:
    key = np.asarray(KEY_LIGHT_DIRECTION)
    lights = [f'<light name="key" directional="true" castshadow="true" bulbradius="1.5" '
              f'pos="{_fmt(center - 10 * key)}" dir="{_fmt(key)}" '
              f'diffuse="{_fmt([KEY_LIGHT_DIFFUSE] * 3)}" specular="0.6 0.6 0.6"/>']
    # A point light above the near floor: light falls off toward the far (top) edge, as in the
    # real frames.
    position, diffuse = np.asarray(FILL_LIGHT[0]), FILL_LIGHT[1]
    lights.append(f'<light name="fill" directional="false" castshadow="false" '
                  f'pos="{_fmt(position)}" dir="0 0 -1" cutoff="180" attenuation="1 0.15 0" '
                  f'diffuse="{_fmt([diffuse] * 3)}" specular="0 0 0"/>')
    return "\n    ".join(lights)


def build_mjcf(spec: SceneSpec, settings: GeneratorSettings) -> str:
    """The MuJoCo XML of a scene: floor, lights, the fixed camera and one free body per object."""
    camera = make_camera(settings)
    sc = settings.scene
    corners = np.array([camera.unproject(u, v) for u in (0, settings.width)
                        for v in (0, settings.height)])
    # The shadow map covers `extent` around `center`: sized to the visible floor, it neither
    # misses far shadows nor wastes resolution (a too large one gives speckled shadows).
    view_center = (corners.min(0) + corners.max(0)) / 2
    view_extent = float(np.max(corners.max(0) - corners.min(0))) / 2
    materials = "\n    ".join(_material_xml(i, o) for i, o in enumerate(spec.objects))
    bodies = "\n    ".join(_body_xml(i, o, sc.object_size, sc.friction)
                           for i, o in enumerate(spec.objects))
    r = settings.render
    return f"""<mujoco model="physics_scene">
  <option timestep="{settings.physics.timestep:.6g}" integrator="implicitfast"/>
  <statistic center="{_fmt(view_center)}" extent="{view_extent:.6g}"/>
  <visual>
    <quality shadowsize="{r.shadow_size}" offsamples="{r.offsamples}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.2 0.2 0.2" specular="0.05 0.05 0.05"/>
    <map znear="0.01" zfar="4" shadowclip="2"/>
    <global offwidth="{max(settings.width, 64)}" offheight="{max(settings.height, 64)}"/>
  </visual>
  <asset>
    <material name="floor" rgba="0.555 0.555 0.555 1" specular="0.05" shininess="0.05"/>
    {materials}
  </asset>
  <worldbody>
    {_lights_xml(view_center)}
    <geom name="floor" type="plane" size="40 40 0.1" material="floor"
          friction="{sc.friction:.6g} 0.005 0.0001"/>
    <camera name="view" pos="{_fmt(camera.position)}"
            xyaxes="{_fmt(camera.right)} {_fmt(camera.up)}" fovy="{camera.fovy_deg:.6g}"/>
    {bodies}
  </worldbody>
</mujoco>
"""
