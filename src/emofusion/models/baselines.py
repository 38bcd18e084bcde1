"""Baselines every paper compares against: unimodal, early fusion, late fusion, vanilla cross-attention (ca).

Each uses a temporal encoder, a BLSTM block (the RJCA family's, default) or a TCN + BatchNorm (RJCMA's), and
the RJCA family's per-target MLP heads. None of them has a time-mixing matrix of fixed size, so any L works and
``seq_len`` is ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from emofusion.errors import ConfigError
from emofusion.models.blocks import BLSTMBlock, RegressionHeads, TCNEncoder, l2_normalize, xavier_init
from emofusion.models.config import MODALITIES, FusionConfig
from emofusion.models.registry import FusionModel, register_model


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineConfig(FusionConfig):
    """Config of the baselines.

    modality: the modality of ``unimodal`` (None: the only one in dims); other models ignore it.
    temporal: "blstm" (BLSTM block, as the RJCA family) or "tcn" (TCN + BatchNorm, as RJCMA).
    width: output width of the temporal encoder; None -> its input width.
    normalize_inputs: L2-normalise each input feature vector (as the RJCA family does).
    lstm_layers, lstm_dropout: the BLSTM block.
    tcn_levels, tcn_kernel, tcn_dropout: the TCN (``tcn_levels`` levels of ``width`` channels).
    head_hidden, head_dropout: the per-target MLP heads.
    """

    modality: str | None = None
    temporal: str = "blstm"
    width: int | None = None
    normalize_inputs: bool = True
    lstm_layers: int = 2
    lstm_dropout: float = 0.1
    tcn_levels: int = 4
    tcn_kernel: int = 5
    tcn_dropout: float = 0.1
    head_hidden: int = 128
    head_dropout: float = 0.6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temporal not in ("blstm", "tcn"):
            raise ConfigError(f"temporal must be 'blstm' or 'tcn', got {self.temporal!r}")
        if self.modality is not None and self.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {list(MODALITIES)}, got {self.modality!r}")


def temporal_encoder(*, in_dim: int, config: BaselineConfig) -> nn.Module:
    """``forward(x (B, L, in_dim), mask bool (B, L)) -> (B, L, width)``."""
    width = config.width or in_dim
    if config.temporal == "tcn":
        return TCNEncoder(
            in_dim=in_dim,
            channels=[width] * config.tcn_levels,
            kernel_size=config.tcn_kernel,
            dropout=config.tcn_dropout,
        )
    return BLSTMBlock(in_dim=in_dim, out_dim=width, num_layers=config.lstm_layers, dropout=config.lstm_dropout)


class Baseline(FusionModel):
    """Shared input handling: zero invalid steps, optionally L2-normalise."""

    config_class = BaselineConfig
    config: BaselineConfig

    def inputs(
        self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        xs, ms = self.prepare(feats, masks)
        if self.config.normalize_inputs:
            xs = {m: l2_normalize(x) for m, x in xs.items()}
        return xs, ms


@register_model("unimodal")
class Unimodal(Baseline):
    """One modality: temporal encoder -> heads. ``config.modality`` picks it when dims lists several (the others
    are ignored, so a loader may pass them all).

    ``forward(feats, masks)``: ``feats[m]: (B, L, d_m)``, ``masks[m]: bool (B, L)`` (True = valid; invalid steps
    zeroed at the entry) -> ``(B, L, n_targets)``.
    """

    def __init__(self, *, config: BaselineConfig) -> None:
        if config.modality is None:
            config.require_modalities("unimodal", least=1, most=1)
        elif config.modality not in config.dim:
            raise ConfigError(f"unimodal: modality {config.modality!r} has no width in dims {config.dim}")
        # Only the chosen modality is an input: keep just its width so prepare() checks and masks only it.
        modality = config.modality or config.modalities[0]
        config = dataclasses.replace(config, dims=((modality, config.dim[modality]),), modality=modality)
        super().__init__(config=config)
        self.temporal = temporal_encoder(in_dim=config.dim[modality], config=config)
        self.heads = RegressionHeads(
            in_dim=config.width or config.dim[modality],
            n_targets=config.n_targets,
            hidden=config.head_hidden,
            dropout=config.head_dropout,
        )
        xavier_init(self)

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        xs, ms = self.inputs(feats, masks)
        m = self.modalities[0]  # the only one: __init__ kept just the chosen modality's width
        return self.heads(self.temporal(xs[m], ms[m]))


@register_model("early_fusion")
class EarlyFusion(Baseline):
    """Concatenate the modalities (visual, audio, text order) -> temporal encoder -> heads.

    ``forward(feats, masks)`` -> ``(B, L, n_targets)``; invalid steps of each modality are zeroed at the entry.
    """

    def __init__(self, *, config: BaselineConfig) -> None:
        super().__init__(config=config)
        joint = sum(config.dim.values())
        self.temporal = temporal_encoder(in_dim=joint, config=config)
        self.heads = RegressionHeads(
            in_dim=config.width or joint,
            n_targets=config.n_targets,
            hidden=config.head_hidden,
            dropout=config.head_dropout,
        )
        xavier_init(self)

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        xs, ms = self.inputs(feats, masks)
        joint = torch.cat([xs[m] for m in self.modalities], dim=-1)  # (B, L, d)
        return self.heads(self.temporal(joint, self.any_valid(ms)))


@register_model("late_fusion")
class LateFusion(Baseline):
    """A unimodal model per modality; the prediction is the average of their heads' outputs over the modalities
    valid at each step (all of them where none is).

    ``forward(feats, masks)`` -> ``(B, L, n_targets)``; invalid steps of each modality are zeroed at the entry.
    """

    def __init__(self, *, config: BaselineConfig) -> None:
        super().__init__(config=config)
        self.temporal = nn.ModuleDict({m: temporal_encoder(in_dim=d, config=config) for m, d in config.dims})
        self.heads = nn.ModuleDict(
            {
                m: RegressionHeads(
                    in_dim=config.width or d,
                    n_targets=config.n_targets,
                    hidden=config.head_hidden,
                    dropout=config.head_dropout,
                )
                for m, d in config.dims
            }
        )
        xavier_init(self)

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        xs, ms = self.inputs(feats, masks)
        preds = torch.stack([self.heads[m](self.temporal[m](xs[m], ms[m])) for m in self.modalities])  # (M, B, L, T)
        valid = torch.stack([ms[m] for m in self.modalities]).to(preds.dtype)  # (M, B, L)
        weight = torch.where(valid.sum(0, keepdim=True) > 0, valid, torch.ones_like(valid)).unsqueeze(-1)
        return (preds * weight).sum(0) / weight.sum(0)  # (B, L, T)


class CrossAttention(nn.Module):
    """Vanilla cross-attention (FG 2021) between two modalities over time.

    ``x1: (B, L, d1)``, ``x2: (B, L, d2)``, masks ``bool (B, L)`` -> ``(att1 (B, L, d1), att2 (B, L, d2))``.
    Correlation ``Z = X1 W X2^T`` (B, L, L) with a learned ``W: d1 x d2``. Each modality is attended over its own
    time steps by the other's query: ``att1 = softmax_s(Z^T)[t, s] X1[s]``, ``att2 = softmax_s(Z)[t, s] X2[s]``.
    Invalid key steps are excluded from the softmax.
    """

    def __init__(self, *, dim1: int, dim2: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim1, dim2)))

    def forward(self, x1: Tensor, x2: Tensor, m1: Tensor, m2: Tensor) -> tuple[Tensor, Tensor]:
        z = x1 @ self.weight @ x2.transpose(1, 2)  # (B, L1, L2)
        low = torch.finfo(z.dtype).min  # finite, so a window with no valid key gives uniform weights, not NaN
        att2 = z.masked_fill(~m2.unsqueeze(1), low).softmax(dim=-1) @ x2  # queries from x1: (B, L, d2)
        att1 = z.transpose(1, 2).masked_fill(~m1.unsqueeze(1), low).softmax(dim=-1) @ x1  # queries from x2
        return att1, att2


@register_model("ca")
class CA(Baseline):
    """Cross-attention baseline (FG 2021) for any two modalities: L2-normalise -> :class:`CrossAttention` ->
    concat of the attended features -> temporal encoder -> heads.

    ``forward(feats, masks)`` -> ``(B, L, n_targets)``; invalid steps are zeroed at the entry and masked as keys.
    """

    def __init__(self, *, config: BaselineConfig) -> None:
        super().__init__(config=config)
        config.require_modalities("ca", least=2, most=2)
        d1, d2 = config.dim.values()
        self.attention = CrossAttention(dim1=d1, dim2=d2)
        self.temporal = temporal_encoder(in_dim=d1 + d2, config=config)
        self.heads = RegressionHeads(
            in_dim=config.width or d1 + d2,
            n_targets=config.n_targets,
            hidden=config.head_hidden,
            dropout=config.head_dropout,
        )
        xavier_init(self)

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        xs, ms = self.inputs(feats, masks)
        (m1, x1), (m2, x2) = xs.items()
        att1, att2 = self.attention(x1, x2, ms[m1], ms[m2])
        joint = torch.cat([att1, att2], dim=-1)  # (B, L, d1 + d2)
        return self.heads(self.temporal(joint, self.any_valid(ms)))
