"""The MuJoCo XML (MJCF) of a sampled scene: floor, lights, fixed camera, one free body per object.

Contact parameters set here are what makes the motion: see tools/generator/physics.py.
"""
from __future__ import annotations

import math

import numpy as np

from tools.data.classes import COLOR_RGB, COLORS, MATERIALS, SHAPES
from tools.generator.scene import GeneratorSettings, ObjectSpec, SceneSettings, SceneSpec, make_camera


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
# Real rubber is flatly lit (brightness spread within an object about 8-16 of 255, ours 12-21 without this):
# a constant emitted part, with the base colour scaled to keep the mean, flattens the shading.
RUBBER_EMISSION = 0.3
METAL_DARKENING = 0.8        # metal reads as metal only with a darker base (plus specular)


def base_rgb(color: int, material: int) -> np.ndarray:
    """The MuJoCo base colour (0..1) of an object of this colour and material."""
    palette = np.asarray(COLOR_RGB[COLORS[color]], dtype=float)
    rgb = (PALETTE_GAIN * palette + PALETTE_OFFSET) / 255.0 / (RUBBER_SHADING + RUBBER_EMISSION)
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
        look = f'specular="0.12" shininess="0.1" reflectance="0" emission="{RUBBER_EMISSION}"'
    return f'<material name="mat{index}" rgba="{_fmt(rgb)} 1" {look}/>'


def _friction_xml(sc: SceneSettings) -> str:
    # condim 6: sliding, torsional and rolling friction, so rolling spheres come to rest too.
    return (f'condim="6" friction="{sc.friction:.6g} {sc.torsional_friction:.6g} '
            f'{sc.rolling_friction:.6g}"')


def _body_xml(index: int, obj: ObjectSpec, size: float, sc: SceneSettings) -> str:
    gtype, gsize, z = _geom_shape(obj.shape, size)
    half_yaw = obj.yaw / 2
    quat = (math.cos(half_yaw), 0.0, 0.0, math.sin(half_yaw))
    pos = (obj.position[0], obj.position[1], z)
    return (f'<body name="obj{index}" pos="{_fmt(pos)}" quat="{_fmt(quat)}"><freejoint/>'
            f'<geom name="obj{index}" type="{gtype}" size="{_fmt(gsize)}" material="mat{index}"'
            f' {_friction_xml(sc)}/></body>')


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
    bodies = "\n    ".join(_body_xml(i, o, sc.object_size, sc)
                           for i, o in enumerate(spec.objects))
    r = settings.render
    return f"""<mujoco model="physics_scene">
  <option timestep="{settings.physics.timestep:.6g}" integrator="implicitfast" cone="elliptic"/>
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
          {_friction_xml(sc)}/>
    <camera name="view" pos="{_fmt(camera.position)}"
            xyaxes="{_fmt(camera.right)} {_fmt(camera.up)}" fovy="{camera.fovy_deg:.6g}"/>
    {bodies}
  </worldbody>
</mujoco>
"""
