"""The torch device a stage runs on, from its config key (``faces.device``, ``asr.device``, ...)."""

from __future__ import annotations

from emofusion.errors import ConfigError


def resolve_device(name: str, *, key: str = "faces.device"):
    """``auto`` -> CUDA when visible, else CPU; an explicit ``cuda`` without a GPU is a ConfigError naming ``key``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key} is {name!r} but no CUDA device is visible; set {key} to auto or cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"{key}: {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)
