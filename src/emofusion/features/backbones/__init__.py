"""Backbones: pretrained networks that turn one modality's input into rows on the frame timeline.

The registry (:mod:`._registry`) is the public face: :func:`build_backbone`, :func:`backbone_names`, and
:func:`register` for a new one. Importing this package is cheap: the family modules are imported on the first
lookup of their modality, and import torch, opensmile or transformers only inside the backbone that needs them.
"""

from emofusion.features.backbones._registry import (
    BACKBONES,
    MODALITIES,
    AudioBackbone,
    Backbone,
    TextBackbone,
    VisualBackbone,
    backbone_class,
    backbone_config,
    backbone_names,
    backbone_options,
    build_backbone,
    register,
    sha256_files,
    weight_paths,
)

__all__ = [
    "BACKBONES",
    "MODALITIES",
    "AudioBackbone",
    "Backbone",
    "TextBackbone",
    "VisualBackbone",
    "backbone_class",
    "backbone_config",
    "backbone_names",
    "backbone_options",
    "build_backbone",
    "register",
    "sha256_files",
    "weight_paths",
]
