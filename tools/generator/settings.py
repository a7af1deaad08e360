"""The generator's settings from a config (configs/data/generate.yaml plus --config_mod), checked."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tools.core.errors import UserError
from tools.generator.scene import GeneratorSettings

SPLITS = ("train", "val", "unlabeled", "hidden")


def settings_from_config(cfg: DictConfig | dict | GeneratorSettings | None) -> GeneratorSettings:
    """Validate a generator config (missing keys take the defaults) into `GeneratorSettings`."""
    if isinstance(cfg, GeneratorSettings):
        settings = cfg
    else:
        try:
            merged = OmegaConf.merge(OmegaConf.structured(GeneratorSettings), cfg or {})
            settings = OmegaConf.to_object(merged)
        except OmegaConfBaseException as error:
            raise UserError(f"Bad generator config (configs/data/generate.yaml or --config_mod): "
                            f"{error}".strip()) from error
    _check_settings(settings)
    return settings


def _check_settings(s: GeneratorSettings) -> None:
    problems = []
    if s.height < 16 or s.width < 16:
        problems.append(f"height={s.height}, width={s.width}: both must be at least 16")
    if s.frames < 2:
        problems.append(f"frames={s.frames}: must be at least 2")
    if not 1 <= s.hidden_frames <= s.frames:
        problems.append(f"hidden_frames={s.hidden_frames}: must be within 1..frames")
    if not 1 <= s.min_objects <= s.max_objects <= 48:
        problems.append(f"min_objects={s.min_objects}, max_objects={s.max_objects}: "
                        "need 1 <= min_objects <= max_objects <= 48")
    if s.workers < 1:
        problems.append(f"workers={s.workers}: must be at least 1")
    if s.masks_only and (s.counts.unlabeled or s.counts.hidden):
        problems.append("masks_only=true writes labeled trajectories (mask.npy) only: set counts.unlabeled=0 "
                        "and counts.hidden=0")
    for split in SPLITS:
        if getattr(s.counts, split) < 0:
            problems.append(f"counts.{split} is negative")
    sc = s.scene
    if not 0 <= sc.speed_min <= sc.speed_max or not 0 <= sc.enter_speed_min <= sc.enter_speed_max:
        problems.append("scene speeds: need 0 <= *_speed_min <= *_speed_max")
    if not 0 <= sc.enter_frame_min <= sc.enter_frame_max:
        problems.append("scene.enter_frame_min/max: need 0 <= min <= max")
    if not sc.entering_weights or min(sc.entering_weights) < 0 or sum(sc.entering_weights) <= 0:
        problems.append("scene.entering_weights: need non-negative weights with a positive sum")
    if len(sc.edge_weights) != 4 or min(sc.edge_weights) < 0 or sum(sc.edge_weights) <= 0:
        problems.append("scene.edge_weights: need 4 non-negative weights (top, bottom, left, "
                        "right) with a positive sum")
    if not 0 <= sc.aim_at_still_probability <= 1 or not 0 <= sc.static_probability <= 1:
        problems.append("scene.aim_at_still_probability and static_probability: need 0..1")
    if min(sc.friction, sc.torsional_friction, sc.linear_damping) < 0:
        problems.append("scene.friction, torsional_friction, linear_damping: need >= 0")
    if s.physics.timestep <= 0 or s.physics.frame_seconds < s.physics.timestep:
        problems.append("physics: need 0 < timestep <= frame_seconds")
    if problems:
        raise UserError("Bad generator config (configs/data/generate.yaml or --config_mod): "
                        + "; ".join(problems))
