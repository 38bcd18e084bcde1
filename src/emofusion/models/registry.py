"""The model registry, named variants and the base class every fusion model extends.

``@register_model("name")`` adds a :class:`FusionModel` subclass under a unique name (a duplicate raises).
``VARIANTS`` maps a variant name to ``(registered model, config overrides)``: published or paper-literal
settings as config entries, not code paths. ``build_model(name, **config)`` accepts either kind of name; the
caller's keyword arguments override the variant's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from emofusion.errors import ConfigError
from emofusion.models.config import FusionConfig

_REGISTRY: dict[str, type[FusionModel]] = {}

_SPATIAL_FAITHFUL = {"spatial_reshape": "faithful", "spatial_audio": "per_position"}

# name -> (registered model, overrides). The published settings where our defaults differ, and paper-literal ones.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "rjca_published": ("rjca", {"num_iter": 1}),  # the published RJCA code runs one iteration
    # The published spatial attention: its reshape of the flattened maps and its per-position audio broadcast.
    "jca_spatial_faithful": ("jca", _SPATIAL_FAITHFUL),
    "rjca_spatial_faithful": ("rjca", _SPATIAL_FAITHFUL),
    "dca_spatial_faithful": ("dca", _SPATIAL_FAITHFUL),
    # RJCMA trains one model per target; its code runs 2 iterations and skips the joint projection.
    "rjcma_published": ("rjcma", {"n_targets": 1, "num_iter": 2, "joint_projection": False}),
    "rjcma_paper": ("rjcma", {"n_targets": 1, "num_iter": 3, "joint_projection": True}),
    "unimodal_visual": ("unimodal", {"modality": "visual"}),
    "unimodal_audio": ("unimodal", {"modality": "audio"}),
    "unimodal_text": ("unimodal", {"modality": "text"}),
    "early_fusion_tcn": ("early_fusion", {"temporal": "tcn", "normalize_inputs": False}),
    "late_fusion_tcn": ("late_fusion", {"temporal": "tcn", "normalize_inputs": False}),
}


class FusionModel(nn.Module):
    """Base class: one config in, ``forward(feats, masks) -> (B, L, n_targets)``.

    Inputs: ``feats[m]`` is ``(B, L, d_m)`` for every modality ``m`` in ``config.dims`` (extra keys are ignored,
    so a loader may pass every modality it has); ``masks[m]`` is a ``(B, L)`` bool tensor, True = valid. A missing
    mask (or ``masks=None``) means every step is valid. Values at invalid steps never reach the output: they are
    replaced by zeros at the entry (:meth:`prepare`), before any layer mixes time steps.
    """

    config_class: ClassVar[type[FusionConfig]] = FusionConfig
    model_name: ClassVar[str] = ""
    fixed_length: ClassVar[bool] = False  # True when seq_len is baked into the weights

    def __init__(self, *, config: FusionConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    def prepare(
        self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Check shapes and zero the invalid steps: ``({m: (B, L, d_m)}, {m: bool (B, L)})``.

        ``masked_fill`` rather than a product, so NaN or inf at padded steps cannot leak either.
        """
        name = self.model_name or type(self).__name__
        xs: dict[str, Tensor] = {}
        ms: dict[str, Tensor] = {}
        shape: tuple[int, int] | None = None
        for m, width in self.config.dims:
            if m not in feats:
                raise KeyError(f"{name}: no features for modality {m!r}; got {sorted(feats)}")
            x = feats[m]
            if x.dim() != 3 or x.shape[-1] != width:
                raise ValueError(f"{name}: {m} features must be (B, L, {width}), got {tuple(x.shape)}")
            B, L, _ = x.shape
            if shape is not None and (B, L) != shape:
                raise ValueError(f"{name}: {m} features are {B} x {L} steps, other modalities {shape[0]} x {shape[1]}")
            shape = (B, L)
            mask = None if masks is None else masks.get(m)
            if mask is None:
                mask = torch.ones(B, L, dtype=torch.bool, device=x.device)
            if mask.shape != (B, L) or mask.dtype != torch.bool:
                raise ValueError(
                    f"{name}: mask of {m} must be a bool ({B}, {L}) tensor, got {mask.dtype} {tuple(mask.shape)}"
                )
            xs[m] = x.masked_fill(~mask.unsqueeze(-1), 0.0)
            ms[m] = mask
        assert shape is not None  # config validation guarantees a modality
        if self.fixed_length and shape[1] != self.config.seq_len:
            raise ValueError(
                f"{name}: built for seq_len={self.config.seq_len} steps (baked into its time-mixing "
                f"weights), got L={shape[1]}; window the data to {self.config.seq_len} steps"
            )
        return xs, ms

    @staticmethod
    def any_valid(masks: Mapping[str, Tensor]) -> Tensor:
        """``(B, L)``: True where at least one modality is valid."""
        return torch.stack(list(masks.values())).any(dim=0)

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        raise NotImplementedError


M = TypeVar("M", bound=type[FusionModel])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`FusionModel` subclass under ``name``; a taken name raises."""

    def decorate(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        if name in VARIANTS:
            raise ValueError(f"model name {name!r} is already a variant of {VARIANTS[name][0]!r}")
        if not (isinstance(cls, type) and issubclass(cls, FusionModel)):
            raise TypeError(f"register_model({name!r}) decorates FusionModel subclasses, got {cls!r}")
        cls.model_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_models(*, variants: bool = False) -> list[str]:
    """Registered model names (sorted), with the variant names too when ``variants``."""
    names = sorted(_REGISTRY)
    return names + sorted(VARIANTS) if variants else names


def get_model_class(name: str) -> type[FusionModel]:
    """The class registered as ``name`` (a model name, not a variant)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered: {list_models()}") from None


def resolve(name: str) -> tuple[str, dict[str, Any]]:
    """``(model name, config overrides)`` for a model or variant name."""
    if name in _REGISTRY:
        return name, {}
    if name in VARIANTS:
        model, overrides = VARIANTS[name]
        return model, dict(overrides)
    raise ConfigError(f"unknown model {name!r}; models: {list_models()}, variants: {sorted(VARIANTS)}")


def build_config(name: str, **config: Any) -> FusionConfig:
    """The config ``build_model(name, **config)`` would use."""
    model, overrides = resolve(name)
    cls = get_model_class(model).config_class
    merged = {**overrides, **config}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown config keys {unknown}; {cls.__name__} has {sorted(known)}")
    return cls(**merged)


def build_model(name: str, **config: Any) -> FusionModel:
    """Build a registered model or a named variant, e.g. ``build_model("rjca", dims={"visual": 512,
    "audio": 512}, seq_len=16)``; keyword arguments are fields of the model's config class."""
    model, _ = resolve(name)
    return get_model_class(model)(config=build_config(name, **config))
