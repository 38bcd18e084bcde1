"""Checkpoints as plain dicts, loadable with ``torch.load(..., weights_only=True)``; the model is rebuilt from its
config (the layout openai-whisper uses).

Layout::

    {"format": "emofusion.models", "version": 1,
     "model": registered model name, "config": the config as plain types,
     "state_dict": {name: tensor}, "provenance": emofusion.provenance.provenance(...), "extra": {...}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emofusion.io import atomic_path
from emofusion.models.registry import FusionModel, build_model
from emofusion.provenance import provenance

FORMAT = "emofusion.models"
VERSION = 1


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is made of what ``weights_only=True`` loads (plain types and tensors)."""
    if value is None or isinstance(value, bool | int | float | str | Tensor):
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"checkpoint {where}: key {k!r} must be str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"checkpoint {where}: {type(value).__name__} cannot be loaded with weights_only=True; "
        f"convert it to a plain Python type (float(x), x.tolist(), str(x))"
    )


def save_checkpoint(
    path: str | os.PathLike, model: FusionModel, *, extra: Mapping[str, Any] | None = None, seed: int | None = None
) -> Path:
    """Write ``model`` (name, config, CPU state dict, provenance) and ``extra`` (metrics, epoch, optimizer
    settings: plain types or tensors) to ``path`` atomically; returns the path."""
    if not model.model_name:
        raise ValueError(f"{type(model).__name__} is not a registered model; register it to checkpoint it")
    config = model.config.to_dict()
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.model_name,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": provenance(config={"model": model.model_name, **config}, seed=seed),
        "extra": dict(extra or {}),
    }
    _check_plain(ckpt["extra"], "extra")
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True`` (no code runs on load)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not an emofusion model checkpoint (no format={FORMAT!r} entry)")
    if ckpt.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt.get('version')} is not {VERSION}; re-save it")
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any], *, strict: bool = True) -> FusionModel:
    """The model of a :func:`read_checkpoint` dict: rebuilt from its name and config (on the CPU), its weights
    loaded; in eval mode."""
    model = build_model(ckpt["model"], **ckpt["config"])
    model.load_state_dict(ckpt["state_dict"], strict=strict)
    return model.eval()


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", strict: bool = True
) -> FusionModel:
    """Rebuild the model from the checkpoint's name and config and load its weights; returned in eval mode.
    Use :func:`read_checkpoint` (and :func:`model_from_checkpoint`) for the provenance and ``extra`` too."""
    ckpt = read_checkpoint(path, map_location=map_location)
    return model_from_checkpoint(ckpt, strict=strict).to(map_location)
