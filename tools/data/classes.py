"""The 49 semantic classes of the competition masks and a palette to draw them.

A class id encodes one (shape, material, color) object: ``id = 1 + color + 8*material + 16*shape``;
0 is the background. Each combination occurs at most once per video, so a class is an instance.
This module is the one definition of the task's constants (classes, frame counts, the predicted frame). It
imports numpy only, so the generator's worker processes can use it without loading torch.
"""
from __future__ import annotations

import numpy as np

SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")
MATERIALS: tuple[str, ...] = ("metal", "rubber")
COLORS: tuple[str, ...] = ("gray", "red", "blue", "green", "brown", "cyan", "purple", "yellow")
BACKGROUND: int = 0
NUM_CLASSES: int = 1 + len(SHAPES) * len(MATERIALS) * len(COLORS)
MAX_CLASS_ID: int = NUM_CLASSES - 1

NUM_FRAMES: int = 22  # frames per labeled video
NUM_OBSERVED: int = 11  # frames 1-11 are given (indices 0-10); hidden videos hold only these
TARGET_FRAME: int = 21  # index of frame 22, the frame whose mask is predicted and scored

# CLEVR's own RGB values for the colour names, so a colour-coded mask looks like its video.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "cyan": (41, 208, 208),
    "purple": (129, 38, 192),
    "yellow": (255, 238, 51),
}


def _index_of(name: str, names: tuple[str, ...], kind: str) -> int:
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {names}")
    return names.index(name)


def class_id(shape: str | int, material: str | int, color: str | int) -> int:
    """The class id of an object, from names or from indices into SHAPES/MATERIALS/COLORS."""
    s = shape if isinstance(shape, int) else _index_of(shape, SHAPES, "shape")
    m = material if isinstance(material, int) else _index_of(material, MATERIALS, "material")
    c = color if isinstance(color, int) else _index_of(color, COLORS, "color")
    if not (0 <= s < len(SHAPES) and 0 <= m < len(MATERIALS) and 0 <= c < len(COLORS)):
        raise ValueError(f"index out of range: shape={s}, material={m}, color={c}")
    return 1 + c + len(COLORS) * m + len(COLORS) * len(MATERIALS) * s


def class_indices(class_index: int) -> tuple[int, int, int]:
    """The (shape, material, color) indices of an object class id in 1..48: the inverse of `class_id`."""
    if not 1 <= int(class_index) <= MAX_CLASS_ID:
        raise ValueError(f"class id {class_index} is not an object class (1..{MAX_CLASS_ID})")
    offset = int(class_index) - 1
    color = offset % len(COLORS)
    material = (offset // len(COLORS)) % len(MATERIALS)
    shape = offset // (len(COLORS) * len(MATERIALS))
    return shape, material, color


def class_parts(class_index: int) -> tuple[str, str, str]:
    """The (shape, material, color) names of an object class id in 1..48."""
    shape, material, color = class_indices(class_index)
    return SHAPES[shape], MATERIALS[material], COLORS[color]


def class_name(class_index: int) -> str:
    """A readable name: 'red metal cube', or 'background' for 0."""
    if int(class_index) == BACKGROUND:
        return "background"
    shape, material, color = class_parts(class_index)
    return f"{color} {material} {shape}"


def _build_palette() -> np.ndarray:
    palette = np.zeros((NUM_CLASSES, 3), dtype=np.uint8)
    # Material and shape shift the brightness of the colour so all 48 objects stay distinct.
    material_gain = (1.25, 0.85)
    shape_gain = (1.0, 0.8, 0.6)
    for index in range(1, NUM_CLASSES):
        shape, material, color = class_parts(index)
        base = np.array(COLOR_RGB[color], dtype=np.float64)
        gain = material_gain[MATERIALS.index(material)] * shape_gain[SHAPES.index(shape)]
        palette[index] = np.clip(np.round(base * gain + 12 * SHAPES.index(shape)), 0, 255)
    return palette


PALETTE: np.ndarray = _build_palette()
PALETTE.flags.writeable = False


def colorize_mask(mask) -> np.ndarray:
    """Colour-code a [..., H, W] mask (numpy or torch) of class ids as uint8 [..., H, W, 3]; ids outside 0..48 draw white."""
    ids = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    ids = ids.astype(np.int64)
    out_of_range = (ids < 0) | (ids > MAX_CLASS_ID)
    rgb = PALETTE[np.where(out_of_range, 0, ids)]
    rgb[out_of_range] = 255
    return rgb
