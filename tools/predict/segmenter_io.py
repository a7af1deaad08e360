"""Loading segmenter weights: a trained `--exp segment` checkpoint, or local encoder weights to start from.

File handling lives here, not in models/segmenter.py, so the network module stays free of run infrastructure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from models.segmenter import Segmenter, build_segmenter
from tools.core.checkpoint import check_config_matches, load_checkpoint, weights_for_inference
from tools.core.errors import UserError
from tools.data.classes import NUM_CLASSES, class_indices


def class_factor_table() -> list[tuple[int, int, int]]:
    """(shape, material, colour) indices of object classes 1..48, in class-id order (tools/data/classes.py)."""
    return [class_indices(class_index) for class_index in range(1, NUM_CLASSES)]


def build_task_segmenter(model_cfg: Mapping[str, Any]) -> Segmenter:
    """build_segmenter with this task's class table, which the factorised head composes its classes from."""
    try:
        return build_segmenter(model_cfg, class_factors=class_factor_table())
    except ValueError as err:  # a bad model.* value: one line naming the key
        raise UserError(f"{err}; fix the segmenter config's model section") from err


def load_local_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load encoder weights from a local file: an encoder state dict or a torchvision ResNet one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"model.encoder_weights_path '{path}' does not exist; point it at a local "
                        f"state-dict file or set it to null")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torn zip, pickle refused by weights_only, not a torch file
        raise UserError(f"model.encoder_weights_path '{path}' is not a readable torch state dict "
                        f"({type(err).__name__}); save one with torch.save(model.state_dict(), path)") from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    # smp's ResNet encoder is torchvision's ResNet without the classifier head (and without the stages
    # a shallow encoder dropped).
    children = {name for name, _ in encoder.named_children()}
    state = {k: v for k, v in dict(state).items() if k.split(".")[0] in children}
    # nn.Module's own method: smp's ResNetEncoder.load_state_dict override returns None, hiding mismatches.
    fix = "use weights of the same ResNet as model.encoder"
    try:
        missing, unexpected = nn.Module.load_state_dict(encoder, state, strict=False)
    except RuntimeError as err:  # tensor shapes differ
        raise UserError(f"model.encoder_weights_path '{path}' does not fit the encoder "
                        f"({str(err).splitlines()[-1].strip()[:200]}); {fix}") from err
    if missing or unexpected:
        raise UserError(f"model.encoder_weights_path '{path}' does not fit the encoder "
                        f"({len(missing)} missing keys e.g. {missing[:2]}, {len(unexpected)} unexpected e.g. "
                        f"{unexpected[:2]}); {fix}")


def load_segmenter(checkpoint_path: str | Path, device: str | torch.device = "cpu",
                   expected_model_cfg: Mapping[str, Any] | None = None) -> Segmenter:
    """A trained Segmenter in eval mode from a `--exp segment` checkpoint, with EMA weights if it has them.

    expected_model_cfg, when given, must equal the checkpoint's `model` config (else a UserError).
    """
    state = load_checkpoint(checkpoint_path, map_location="cpu")
    config = state.get("config") or {}
    model_cfg = config.get("model") or {}
    if "arch" not in model_cfg or "encoder" not in model_cfg:
        raise UserError(f"checkpoint '{checkpoint_path}' is not a segmenter checkpoint (its config has no "
                        f"model.arch/model.encoder); pass a model_best.pth or model_last.pth of --exp segment")
    if expected_model_cfg is not None:
        check_config_matches(config, {"model": dict(expected_model_cfg)}, "model", checkpoint_path)
    model = build_task_segmenter(model_cfg)
    model.load_state_dict(weights_for_inference(state), strict=True)
    data_cfg = config.get("data") or {}
    if data_cfg.get("height") and data_cfg.get("width"):
        model.trained_size = (int(data_cfg["height"]), int(data_cfg["width"]))
    return model.to(device).eval()


@torch.no_grad()
def video_log_probs(segmenter: Segmenter, frames: torch.Tensor, batch_size: int = 8, tta: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class log-probabilities [T, 49, H, W] (CPU, float) of frames [T, 3, H, W] in [0, 1], at their resolution,
    segmented `batch_size` frames at a time on the segmenter's device at its trained size (with the flip TTA when
    `tta`), and the contact-edge probabilities [T, H, W] of a segmenter with `model.boundary` (else None)."""
    device = next(segmenter.parameters()).device
    scores, edges = [], []
    for i in range(0, len(frames), batch_size):
        batch_scores, batch_edges = segmenter.segment_with_boundary(frames[i:i + batch_size].to(device), tta=tta,
                                                                    size=segmenter.trained_size)
        scores.append(batch_scores.float().log_softmax(1).cpu())
        edges.append(None if batch_edges is None else batch_edges.float().cpu())
    return torch.cat(scores), (None if edges[0] is None else torch.cat(edges))
