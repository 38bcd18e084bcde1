"""Reading a user's weight file: a plain state dict (never pickled code), loaded by name or, for the same network
named another way (timm against torchvision), by order and shape.
"""

from __future__ import annotations

from pathlib import Path

from emofusion.errors import ConfigError


def load_state_dict(path: Path, *, key: str) -> dict:
    """A plain state dict from a local file (``weights_only=True``: no pickled code runs); a checkpoint dict
    holding one under ``state_dict`` / ``model`` / ``network`` is unwrapped."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled full models (timm, HSEmotion's .pt) are refused by weights_only
        raise ConfigError(
            f"{key}: {path} is not a plain state dict (torch.load with weights_only=True refused it: "
            f"{type(e).__name__}, e.g. a pickled whole model); save "
            "one with `torch.save(model.state_dict(), path)` where the model's code is installed "
            "(see docs/stages.md, Feature stores and visual backbones)"
        ) from None
    for inner in ("state_dict", "model", "network"):
        if isinstance(obj, dict) and isinstance(obj.get(inner), dict):
            obj = obj[inner]
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"{key}: {path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_by_order(module, state: dict, *, key: str, path: Path) -> None:
    """Load ``state`` into ``module`` by name, or else by order with equal shapes (timm and torchvision name the
    same EfficientNet differently but list its tensors in the same order)."""
    target = module.state_dict()
    if set(state) == set(target):
        module.load_state_dict(state, strict=True)
        return
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst) or any(v.shape != target[k].shape for (_, v), k in zip(src, dst, strict=True)):
        raise ConfigError(
            f"{key}: the tensors in {path} do not match {type(module).__name__} (by name or by order "
            f"and shape: {len(src)} tensors vs {len(dst)}); is it the right architecture?"
        )
    module.load_state_dict({k: v for (_, v), k in zip(src, dst, strict=True)}, strict=False)
