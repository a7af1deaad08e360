"""Offscreen OpenGL setup for MuJoCo, and simulating + rendering one scene to frames and masks.

MuJoCo reads `MUJOCO_GL` once, when it is imported, so this module never imports mujoco at load
time: call `configure_process` first (the generator's worker processes do so in their initializer).
The backend is chosen by probing each candidate in a fresh subprocess (EGL, then OSMesa).
"""
from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache

import numpy as np

from tools.core.errors import UserError
from tools.data.classes import MATERIALS
from tools.generator.metal import sample_environment, shade_metal
from tools.generator.physics import build_model, simulate
from tools.generator.scene import GeneratorSettings, RenderSettings, SceneSpec, make_camera

GL_BACKENDS = ("egl", "osmesa")

_PROBE = """
import mujoco
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size="1"/></worldbody></mujoco>')
renderer = mujoco.Renderer(model, 16, 16)
renderer.update_scene(mujoco.MjData(model))
renderer.render()
"""

INSTALL_HINT = ("Install an offscreen OpenGL library: `apt-get install libegl1 libgl1-mesa-dri` "
                "(EGL) or `apt-get install libosmesa6` (OSMesa), or pick one with "
                "--config_mod render.gl=egl|osmesa.")


@lru_cache(maxsize=None)
def backend_works(backend: str) -> tuple[bool, str]:
    """Whether MuJoCo renders with this MUJOCO_GL value (tried in a fresh process), and why not."""
    env = dict(os.environ, MUJOCO_GL=backend, LP_NUM_THREADS="1")
    env.pop("PYOPENGL_PLATFORM", None)  # mujoco sets it to match MUJOCO_GL
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                                text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    last_line = (result.stderr.strip().splitlines() or [""])[-1]
    return result.returncode == 0, last_line


def select_gl_backend(preferred: str = "auto") -> str:
    """The MUJOCO_GL value to use: `preferred` if it renders, else the first of egl, osmesa."""
    if preferred not in ("auto", *GL_BACKENDS):
        raise UserError(f"render.gl={preferred!r} is not one of auto, egl, osmesa.")
    candidates = GL_BACKENDS if preferred == "auto" else (preferred,)
    failures = []
    for backend in candidates:
        ok, reason = backend_works(backend)
        if ok:
            return backend
        failures.append(f"MUJOCO_GL={backend}: {reason}")
    raise UserError("MuJoCo cannot render offscreen here (" + "; ".join(failures) + "). "
                    + INSTALL_HINT)


def configure_process(backend: str) -> None:
    """Set the environment a rendering process needs; must run before mujoco is imported."""
    if "mujoco" in sys.modules and os.environ.get("MUJOCO_GL") != backend:
        raise RuntimeError("mujoco was imported before configure_process; MUJOCO_GL is fixed")
    os.environ["MUJOCO_GL"] = backend
    os.environ.pop("PYOPENGL_PLATFORM", None)
    # llvmpipe (software GL) is fastest with one thread per process and one process per core.
    os.environ["LP_NUM_THREADS"] = "1"


def geom_class_lookup(model, class_ids: list[int]) -> np.ndarray:
    """Table from MuJoCo geom id (+1, so that -1 = background lands at 0) to class id."""
    import mujoco

    table = np.zeros(model.ngeom + 1, dtype=np.uint8)
    for index, cid in enumerate(class_ids):
        table[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"obj{index}") + 1] = cid
    return table


def segmentation_to_classes(segmentation: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """(H, W, 2) MuJoCo segmentation (object id, object type) -> (H, W) uint8 class ids."""
    import mujoco

    ids, types = segmentation[..., 0], segmentation[..., 1]
    is_geom = (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0)
    return np.where(is_geom, lookup[np.clip(ids + 1, 0, len(lookup) - 1)], 0).astype(np.uint8)


def simulate_and_render(spec: SceneSpec, settings: GeneratorSettings, frames: int | None = None,
                        with_rgb: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Run the physics and render every frame.

    Returns RGB frames (T, H, W, 3) uint8 (None when `with_rgb` is False: masks cost a sixth of
    the time, which is what calibration needs) and class-id masks (T, H, W) uint8.
    """
    import mujoco

    frames = settings.frames if frames is None else frames
    model, data = build_model(spec, settings)
    lookup = geom_class_lookup(model, [o.class_id for o in spec.objects])
    rgb = np.empty((frames, settings.height, settings.width, 3), dtype=np.uint8) if with_rgb else None
    masks = np.empty((frames, settings.height, settings.width), dtype=np.uint8)
    mirror = MirrorMetal(spec, settings, model) if with_rgb and settings.render.mirror_metal else None
    with mujoco.Renderer(model, settings.height, settings.width) as renderer:
        for frame in simulate(model, data, spec, settings, frames):
            renderer.update_scene(data, camera="view")
            if with_rgb:
                renderer.disable_segmentation_rendering()
                rgb[frame] = renderer.render()
            renderer.enable_segmentation_rendering()
            masks[frame] = segmentation_to_classes(renderer.render(), lookup)
            if not with_rgb:
                continue
            # The look after rendering: both need the frame's masks, so they come after segmentation.
            renderer.disable_segmentation_rendering()
            if settings.render.shadow_blur > 0:
                soften_shadows(rgb[frame], masks[frame], unshadowed(renderer, model, data), settings.render)
            if mirror is not None and mirror.objects:
                renderer.enable_depth_rendering()
                mirror.shade(rgb[frame], masks[frame], renderer.render(), data)
                renderer.disable_depth_rendering()
    return rgb, masks


def unshadowed(renderer, model, data) -> np.ndarray:
    """The current frame rendered with no light casting shadows."""
    casts = model.light_castshadow.copy()
    model.light_castshadow[:] = 0
    renderer.update_scene(data, camera="view")
    frame = renderer.render()
    model.light_castshadow[:] = casts
    return frame


def soften_shadows(rgb: np.ndarray, mask: np.ndarray, lit: np.ndarray, render: RenderSettings) -> None:
    """Replace the floor's hard shadow-map shadows (in place) by soft, lighter ones like the real frames':
    the shadow is the ratio of the frame to its unshadowed render, blurred by `render.shadow_blur` pixels
    and scaled by `render.shadow_strength`. Objects keep their own shading."""
    from scipy.ndimage import gaussian_filter

    lit_f = lit.astype(np.float32)
    ratio = rgb.astype(np.float32).mean(axis=2) / np.maximum(lit_f.mean(axis=2), 1.0)
    shade = 1.0 - render.shadow_strength * (1.0 - gaussian_filter(np.clip(ratio, 0, 1), render.shadow_blur))
    floor = mask == 0
    rgb[floor] = np.clip(lit_f[floor] * shade[floor, None] + 0.5, 0, 255).astype(np.uint8)


class MirrorMetal:
    """Repaints the metal objects of rendered frames as mirrors of the video's studio (metal.py)."""

    def __init__(self, spec: SceneSpec, settings: GeneratorSettings, model) -> None:
        import mujoco

        self.camera = make_camera(settings)
        self.env = sample_environment(np.random.default_rng(spec.look_seed))
        types = {int(mujoco.mjtGeom.mjGEOM_BOX): "box", int(mujoco.mjtGeom.mjGEOM_SPHERE): "sphere",
                 int(mujoco.mjtGeom.mjGEOM_CYLINDER): "cylinder"}
        self.objects = []  # (class id, colour, geom id, geom type name) of each metal object
        for index, obj in enumerate(spec.objects):
            if MATERIALS[obj.material] == "metal":
                geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"obj{index}")
                self.objects.append((obj.class_id, obj.color, geom, types[int(model.geom_type[geom])]))
        self.sizes = model.geom_size

    def shade(self, rgb: np.ndarray, mask: np.ndarray, depth: np.ndarray, data) -> None:
        for cid, color, geom, geom_type in self.objects:
            shade_metal(rgb, mask == cid, depth, self.camera, self.env, color, geom_type, self.sizes[geom],
                        data.geom_xpos[geom], data.geom_xmat[geom].reshape(3, 3))
