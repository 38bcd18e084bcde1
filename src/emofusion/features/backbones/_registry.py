"""Backbone registry per modality: one :class:`Backbone` subclass per network, registered with :func:`register`.

The family modules of a modality (:data:`FAMILIES`) are imported on its first lookup, not here, and import
torch / opensmile / transformers only inside the backbone that needs them, so ``import
emofusion.features.backbones`` stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

from emofusion.errors import ConfigError
from emofusion.layout import MODALITIES

if TYPE_CHECKING:
    import numpy as np
    import torch

# The modules of this package that register each modality's backbones, one per backbone family: a new family's
# module goes here, or its backbones are never found.
FAMILIES: dict[str, tuple[str, ...]] = {
    "visual": ("fer", "pyemotion", "hsemotion", "facenet", "torchvision_classifier", "hf_image", "r2plus1d"),
    "audio": ("opensmile_llds", "logmel", "whisper_encoder", "resemblyzer", "crepe", "hf_speech", "vggish"),
    "text": ("hf_text",),
}

BACKBONES: dict[tuple[str, str], type[Backbone]] = {}
_loaded: set[str] = set()


class Backbone:
    """A pretrained network that turns one modality's input into rows on the frame timeline."""

    modality: ClassVar[str]
    name: ClassVar[str]
    licence: ClassVar[str]
    amp: ClassVar[bool] = False  # tolerates float16 autocast on CUDA
    offline: ClassVar[bool]  # weights ship in an installed wheel, or none are needed
    # Distributions whose code or shipped weights shape the outputs: the workflow reruns the backbone when their
    # installed versions change (read at DAG time without building the backbone).
    packages: ClassVar[tuple[str, ...]] = ()

    width: int
    native_rate: float
    timeline: str

    def __init__(self, options: dict | None = None, *, device: torch.device | None = None):
        import torch

        self.options = dict(options or {})
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def key(self, option: str) -> str:
        """The config key of one of this backbone's options, for error messages."""
        return f"features.{self.modality}.backbones.{self.name}.{option}"

    def option(self, option: str, default: Any = None) -> Any:
        return self.options.get(option, default)

    @overload
    def weight_path(self, option: str = ..., *, required: Literal[True] = ...) -> Path: ...
    @overload
    def weight_path(self, option: str = ..., *, required: bool) -> Path | None: ...

    def weight_path(self, option: str = "weights", *, required: bool = True) -> Path | None:
        """A user-set local weight file (or directory); ConfigError naming the key when unset or missing."""
        value = self.options.get(option)
        if value is None:
            if required:
                raise ConfigError(
                    f"{self.key(option)} is not set: backbone {self.name} needs a local weight file "
                    "(no download at run time); set it to the path of the downloaded weights"
                )
            return None
        path = Path(os.path.expanduser(str(value)))
        if not path.exists():
            raise ConfigError(
                f"{self.key(option)} is {str(value)!r}, which does not exist; download the weights "
                "there or point the key at them"
            )
        return path

    def weights(self) -> tuple[str, str]:
        """(where the weights came from, sha256 of the weight file(s) or "none")."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The store attributes this backbone fixes (see :func:`emofusion.features.store.store_attrs`)."""
        source, sha = self.weights()
        return {
            "modality": self.modality,
            "backbone": self.name,
            "width": int(self.width),
            "native_rate": float(self.native_rate),
            "timeline": self.timeline,
            "weights_sha256": sha,
            "weights_source": source,
            "licence": self.licence,
        }


class VisualBackbone(Backbone):
    modality: ClassVar[str] = "visual"
    window: int = 1  # frames per sample; >1 for clip-level video CNNs (a window ending at each frame)
    input_size: int

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) RGB crops on ``self.device`` (or (B, window, H, W, 3)) -> float (B, width)."""
        raise NotImplementedError


class AudioBackbone(Backbone):
    modality: ClassVar[str] = "audio"

    def embed(self, wav: np.ndarray, sample_rate: int, frame_times: np.ndarray) -> np.ndarray:
        """float32 (S,) mono wav on the frame timeline, frame times (N,) s -> float32 (N, width); row i describes
        the window ending at ``frame_times[i]``."""
        raise NotImplementedError


class TextBackbone(Backbone):
    modality: ClassVar[str] = "text"

    def embed_words(self, words: list[str]) -> np.ndarray:
        """The transcript's words in order -> float32 (W, width), one row per word."""
        raise NotImplementedError


def register(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: add a backbone under (modality, name); a duplicate name raises."""
    if cls.modality not in MODALITIES:
        raise ValueError(f"backbone {cls.__name__}: modality {cls.modality!r} is not one of {MODALITIES}")
    key = (cls.modality, cls.name)
    if key in BACKBONES and BACKBONES[key] is not cls:
        raise ValueError(
            f"a {cls.modality} backbone named {cls.name!r} is already registered "
            f"({BACKBONES[key].__module__}.{BACKBONES[key].__qualname__})"
        )
    BACKBONES[key] = cls
    return cls


def _load(modality: str) -> None:
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    if modality in _loaded:
        return
    for family in FAMILIES[modality]:
        importlib.import_module(f"{__package__}.{family}")
    _loaded.add(modality)


def backbone_names(modality: str) -> list[str]:
    """The registered backbone names of one modality, sorted."""
    _load(modality)
    return sorted(name for (m, name) in BACKBONES if m == modality)


def backbone_class(modality: str, name: str) -> type[Backbone]:
    _load(modality)
    try:
        return BACKBONES[(modality, name)]
    except KeyError:
        raise ConfigError(
            f"features.{modality}: unknown backbone {name!r}; registered {modality} backbones: "
            f"{', '.join(backbone_names(modality)) or '(none)'}"
        ) from None


def build_backbone(modality: str, name: str, options: dict | None = None, *, device=None) -> Backbone:
    """Build a registered backbone with its config options (``features.<modality>.backbones.<name>``)."""
    cls = backbone_class(modality, name)
    return cls(dict(options or {}), device=device)


def backbone_options(features: dict, modality: str, name: str) -> dict:
    """One backbone's options in the ``features:`` config (``features.<modality>.backbones.<name>``; {} if unset)."""
    return features[modality].get("backbones", {}).get(name) or {}


def backbone_config(features: dict, modality: str, name: str) -> dict:
    """The part of the ``features:`` config one backbone's outputs depend on: its own options, the device (and
    TF32 when on), and for visual backbones the batch and autocast settings (audio and text read neither). The
    workflow passes exactly this to a backbone's rules and the shards record its hash, so changing anything else
    reruns nothing."""
    section: dict[str, Any] = {"device": features["device"]}
    if features.get("tf32"):  # only when on: stores built before the key existed keep their params and hash
        section["tf32"] = True
    if modality == "visual":
        section.update(batch_size=features["batch_size"], amp=features["amp"])
    return {"features": {**section, modality: {"backbones": {name: backbone_options(features, modality, name)}}}}


def weight_paths(options: dict) -> list[Path]:
    """The local weight files or model directories a backbone's options name (keys weights, path, model), where
    they exist: the workflow makes their files rule inputs, so replacing the weights reruns the backbone."""
    out = []
    for key in ("weights", "path", "model"):
        value = options.get(key)
        path = Path(str(value)).expanduser() if value else None
        if path is not None and path.exists():
            out.append(path)
    return out


def sha256_files(paths: Iterable[str | os.PathLike]) -> str:
    """sha256 of one file, or of several files' bytes in sorted path order (a directory: all files under it)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    h = hashlib.sha256()
    for f in sorted(files) if len(files) > 1 else files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
