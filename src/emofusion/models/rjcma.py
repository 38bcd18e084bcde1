"""RJCMA: recursive joint cross-modal attention over audio, visual and text (CVPR-W 2024, arXiv 2403.13659).

Pipeline: zero invalid steps -> per-modality TCN + BatchNorm -> N-way joint cross-attention block (``num_iter``
iterations) -> concat -> one head per target ``Linear - BatchNorm - LeakyReLU - Linear(1) - tanh`` ->
``(B, L, n_targets)``.

The published model is three-way; the block's equations do not depend on the number of modalities, so any two or
three modalities are accepted (the same block, with J the concatenation of those present).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emofusion.errors import ConfigError
from emofusion.models.blocks import JointCrossAttention, MaskedBatchNorm1d, TCNEncoder
from emofusion.models.config import FusionConfig, int_tuple
from emofusion.models.registry import FusionModel, register_model


@dataclasses.dataclass(frozen=True, kw_only=True)
class RJCMAConfig(FusionConfig):
    """Config of :class:`RJCMA` (defaults: what the published code computes, except ``n_targets``).

    seq_len: L, baked into the block (published: windows of 300 frames).
    n_targets: 2 (one head per target) for the common interface; the published setup trains one model per target
        (``n_targets=1``, variant ``rjcma_published``).
    num_iter: block iterations (published code 2, paper 3).
    joint_projection: False reproduces the published code, which computes J' = J W_q + b and then uses the
        unprojected J (W_q is then not created at all); True is the paper's equation (variant ``rjcma_paper``).
    attn_dropout: dropout inside the block.
    tcn_channels: per modality, the channel width of each TCN level (dilation 2^i at level i); the last is the
        width the block sees. The published widths do not fit its own block; these give V 256, A 128, T 128, which
        the published block was built for.
    tcn_kernel, tcn_dropout: TCN kernel size and dropout.
    head_hidden: hidden width of each head; None -> half the joint width (512 -> 256 as published).
    """

    modality_fields: ClassVar[dict[str, Any]] = {**FusionConfig.modality_fields, "tcn_channels": int_tuple}

    seq_len: int = 300
    num_iter: int = 2
    joint_projection: bool = False
    attn_dropout: float = 0.6
    tcn_channels: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("visual", (256, 256, 256, 256)),
        ("audio", (128, 128, 128, 128)),
        ("text", (256, 256, 128, 128)),
    )
    tcn_kernel: int = 5
    tcn_dropout: float = 0.1
    head_hidden: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_iter < 1:
            raise ConfigError(f"num_iter must be at least 1, got {self.num_iter}")
        channels = dict(self.tcn_channels)
        missing = [m for m in self.modalities if not channels.get(m)]
        if missing:
            raise ConfigError(f"tcn_channels: no TCN widths for {missing}; give e.g. {{'text': [256, 128]}}")


@register_model("rjcma")
class RJCMA(FusionModel):
    """Recursive joint cross-modal attention with per-modality TCNs.

    ``forward(feats, masks)``: ``feats[m]: (B, L, d_m)``, ``masks[m]: bool (B, L)`` (True = valid; values at
    invalid steps are zeroed at the entry, and the BatchNorms take statistics over valid steps only and output
    zeros at invalid ones) -> ``(B, L, n_targets)`` in (-1, 1).
    """

    config_class = RJCMAConfig
    fixed_length = True

    def __init__(self, *, config: RJCMAConfig) -> None:
        super().__init__(config=config)
        config.require_modalities(self.model_name, least=2, most=3)
        channels = dict(config.tcn_channels)
        self.temporal = nn.ModuleDict(
            {
                m: TCNEncoder(in_dim=d, channels=channels[m], kernel_size=config.tcn_kernel, dropout=config.tcn_dropout)
                for m, d in config.dims
            }
        )
        widths = [channels[m][-1] for m in config.modalities]
        self.block = JointCrossAttention(
            dims=widths,
            seq_len=config.seq_len,
            num_iter=config.num_iter,
            dropout=config.attn_dropout,
            joint_projection=config.joint_projection,
        )
        joint = sum(widths)
        hidden = config.head_hidden or max(1, joint // 2)
        self.heads = nn.ModuleList(TanhHead(in_dim=joint, hidden=hidden) for _ in range(config.n_targets))

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        xs, ms = self.prepare(feats, masks)
        inputs = [self.temporal[m](xs[m], ms[m]) for m in self.modalities]  # (B, L, tcn width)
        joint = torch.cat(self.block(inputs)[-1], dim=-1)  # (B, L, d)
        valid = self.any_valid(ms)
        return torch.cat([head(joint, valid) for head in self.heads], dim=-1)  # (B, L, n_targets)


class TanhHead(nn.Module):
    """``Linear - BatchNorm - LeakyReLU - Linear(1) - tanh``: ``(B, L, D), bool (B, L) -> (B, L, 1)``; the
    BatchNorm's statistics come from valid steps only."""

    def __init__(self, *, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.norm = MaskedBatchNorm1d(hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return torch.tanh(self.out(F.leaky_relu(self.norm(self.hidden(x), mask))))
