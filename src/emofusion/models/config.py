"""The config base every model family extends: modality widths, sequence length, number of targets.

Configs are frozen dataclasses (hashable, safe to share). Per-modality settings are stored as a tuple of
``(modality, value)`` pairs in the canonical order visual, audio, text (the published concatenation order), so a
config stays hashable; a ``dict`` is accepted and normalised. :meth:`FusionConfig.to_dict` gives plain Python
types (dicts, lists, numbers, strings) for checkpoints and provenance, and ``Config(**cfg.to_dict())`` rebuilds an
equal config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from emofusion.errors import ConfigError
from emofusion.layout import MODALITIES


def modality_items(value: Any, *, field: str, convert: Callable[[Any], Any] = int) -> tuple[tuple[str, Any], ...]:
    """Normalise a ``{modality: value}`` mapping (or pairs) to pairs in the canonical modality order."""
    pairs = list(value.items()) if isinstance(value, Mapping) else [tuple(p) for p in value]
    names = [name for name, _ in pairs]
    unknown = sorted(set(names) - set(MODALITIES))
    if unknown:
        raise ConfigError(f"{field}: unknown modalities {unknown}; use names from {list(MODALITIES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{field}: a modality is listed twice in {names}")
    return tuple(sorted(((name, convert(v)) for name, v in pairs), key=lambda p: MODALITIES.index(p[0])))


def int_tuple(value: Any) -> tuple[int, ...]:
    """A sequence of ints as a tuple (per-modality channel lists)."""
    return tuple(int(v) for v in value)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively: what JSON and ``torch.load(weights_only=True)`` read back unchanged."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusionConfig:
    """Fields every model has.

    dims: feature width per modality, e.g. ``{"visual": 512, "audio": 512}``; the model's modalities are its keys.
    seq_len: time steps L per window. Models with the joint cross-attention block bake L into a learned L x L
        time-mixing matrix and reject other lengths; the baselines accept any L and ignore it.
    n_targets: outputs per time step (2: valence, arousal; 1: a single-dimension model).
    """

    # Fields holding per-modality pairs, and how to convert each value; subclasses extend this.
    modality_fields: ClassVar[dict[str, Callable[[Any], Any]]] = {"dims": int}

    dims: tuple[tuple[str, int], ...]
    seq_len: int = 16
    n_targets: int = 2

    def __post_init__(self) -> None:
        for name, convert in self.modality_fields.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, modality_items(value, field=name, convert=convert))
        if not self.dims:
            raise ConfigError("dims: give at least one modality width, e.g. {'visual': 512, 'audio': 512}")
        for name, width in self.dims:
            if width < 1:
                raise ConfigError(f"dims: width of {name!r} must be positive, got {width}")
        if self.seq_len < 1 or self.n_targets < 1:
            raise ConfigError(f"seq_len and n_targets must be positive, got {self.seq_len} and {self.n_targets}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names in the canonical order."""
        return tuple(name for name, _ in self.dims)

    @property
    def dim(self) -> dict[str, int]:
        """Width per modality."""
        return dict(self.dims)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (per-modality fields as dicts, tuples as lists) that rebuilds an equal config."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.modality_fields and value is not None:
                value = {name: _plain(v) for name, v in value}
            out[f.name] = _plain(value)
        return out

    def require_modalities(self, model: str, *, least: int, most: int) -> None:
        """Raise a ConfigError unless the number of modalities is within ``[least, most]``."""
        n = len(self.dims)
        if not least <= n <= most:
            want = str(least) if least == most else f"{least} to {most}"
            raise ConfigError(f"{model}: takes {want} modalities, dims has {n}: {list(self.modalities)}")


__all__ = ["MODALITIES", "FusionConfig", "int_tuple", "modality_items"]
