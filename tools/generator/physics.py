"""The MuJoCo model of a scene and its simulation, frame by frame (no rendering here).

Motion comes from MuJoCo's own contact model: Coulomb sliding friction between objects and the
floor (cubes and upright cylinders slide to a stop, spheres start rolling), torsional friction
(spinning objects stop turning) and a linear velocity damping that MuJoCo applies as a passive
force. Measured on the real clips, objects lose speed roughly in proportion to it (per-frame
displacements 18, 14, 11, 10, 7, ... px) rather than at the constant rate of friction alone, so
the damping gives that shape and friction brings slow objects to rest.

Importing mujoco fixes the OpenGL backend (MUJOCO_GL) of the process, so this module imports it
only inside functions: callers that render run `render.configure_process` first.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from tools.generator.mjcf import build_mjcf
from tools.generator.scene import GeneratorSettings, SceneSpec

LINEAR_DOFS = 3  # a free joint's dofs: 3 linear (world frame), then 3 angular


def build_model(spec: SceneSpec, settings: GeneratorSettings):
    """The compiled MjModel of a scene, with velocity damping set, and its MjData at rest."""
    import mujoco

    model = mujoco.MjModel.from_xml_string(build_mjcf(spec, settings))
    set_linear_damping(model, len(spec.objects), settings.scene.linear_damping)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return model, data


def object_dof(model, index: int) -> int:
    """The first degree of freedom (linear x velocity) of object `index`'s free joint."""
    body = model.body(f"obj{index}").id
    return int(model.jnt_dofadr[model.body_jntadr[body]])


def set_linear_damping(model, count: int, rate: float) -> None:
    """Damp each object's horizontal velocity at `rate` per second, whatever its mass.

    MuJoCo's dof damping is a force (N per m/s), so it is scaled by the body's mass; vertical and
    angular velocities are left to contacts and friction, so spheres keep rolling freely."""
    for index in range(count):
        dof = object_dof(model, index)
        mass = model.body_mass[model.body(f"obj{index}").id]
        model.dof_damping[dof:dof + 2] = rate * mass


def launch(model, data, index: int, velocity: tuple[float, float]) -> None:
    """Give object `index` a horizontal velocity (a free joint's qvel starts with the linear part)."""
    dof = object_dof(model, index)
    data.qvel[dof:dof + 2] = velocity


def steps_per_frame(settings: GeneratorSettings) -> int:
    return max(1, round(settings.physics.frame_seconds / settings.physics.timestep))


def simulate(model, data, spec: SceneSpec, settings: GeneratorSettings, frames: int
             ) -> Iterator[int]:
    """Advance the scene to each frame in turn, yielding the frame index while `data` shows it.

    Objects are launched at the start of their launch frame, so frame 0 shows everything at rest
    where it was placed, and motion appears from the next frame on."""
    import mujoco

    nstep = steps_per_frame(settings)
    for frame in range(frames):
        for index, obj in enumerate(spec.objects):
            if obj.launch_frame == frame and obj.velocity != (0.0, 0.0):
                launch(model, data, index, obj.velocity)
        if frame > 0:
            mujoco.mj_step(model, data, nstep=nstep)
        yield frame


def object_positions(data, model, count: int) -> np.ndarray:
    """(count, 3) world positions of the objects' centres."""
    return np.stack([data.xpos[model.body(f"obj{i}").id] for i in range(count)])


def simulate_positions(spec: SceneSpec, settings: GeneratorSettings, frames: int | None = None
                       ) -> np.ndarray:
    """(T, objects, 3) object centres at every frame, without rendering (for tests and analysis)."""
    frames = settings.frames if frames is None else frames
    model, data = build_model(spec, settings)
    return np.stack([object_positions(data, model, len(spec.objects))
                     for _ in simulate(model, data, spec, settings, frames)])
