"""Fusion models for continuous valence/arousal regression from visual, audio and text features.

Build by name: ``build_model("rjca", dims={"visual": 512, "audio": 512}, seq_len=16)``. Registered models:
jca, rjca, dca, grjca, hgrjca (joint cross-attention family, :class:`RJCAConfig`; jca uses :class:`JCAConfig`),
rjcma (:class:`RJCMAConfig`), and the baselines ca, unimodal, early_fusion, late_fusion (:class:`BaselineConfig`).
Named variants (``VARIANTS``: name -> (model, config overrides)) such as ``rjca_published`` or ``rjcma_paper``
build the same way.

Every model: ``forward(feats: {m: (B, L, d_m)}, masks: {m: bool (B, L)}, True = valid) -> (B, L, n_targets)``,
modalities "visual", "audio", "text", concatenated in that order. Values at invalid steps never reach the output.
Loss: :func:`ccc_loss`. Checkpoints: :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`read_checkpoint`.
"""

from emofusion.models.baselines import CA, BaselineConfig, EarlyFusion, LateFusion, Unimodal
from emofusion.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from emofusion.models.config import MODALITIES, FusionConfig
from emofusion.models.loss import CCCLoss, ccc_loss
from emofusion.models.registry import (
    VARIANTS,
    FusionModel,
    build_config,
    build_model,
    get_model_class,
    list_models,
    register_model,
)
from emofusion.models.rjca import DCA, GRJCA, HGRJCA, JCA, RJCA, JCAConfig, RJCAConfig
from emofusion.models.rjcma import RJCMA, RJCMAConfig

__all__ = [
    "CA",
    "DCA",
    "GRJCA",
    "HGRJCA",
    "JCA",
    "MODALITIES",
    "RJCA",
    "RJCMA",
    "VARIANTS",
    "BaselineConfig",
    "CCCLoss",
    "EarlyFusion",
    "FusionConfig",
    "FusionModel",
    "JCAConfig",
    "LateFusion",
    "RJCAConfig",
    "RJCMAConfig",
    "Unimodal",
    "build_config",
    "build_model",
    "ccc_loss",
    "get_model_class",
    "list_models",
    "load_checkpoint",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
]
