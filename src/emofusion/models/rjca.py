"""The joint cross-attention family: jca, rjca, dca, grjca, hgrjca.

Pipeline (B batch, L = seq_len steps, modalities in the order visual, audio, text):

    zero invalid steps -> L2-normalise each feature vector
    -> per-modality BLSTM block (rjca, dca, grjca, hgrjca; jca has none), audio first, because the published
       code guides the optional spatial visual attention with the audio branch's output
    -> joint cross-attention block, ``num_iter`` iterations with separate weights
    -> per-modality gate over the block's input X^(0) and iteration outputs X^(1..T) (model-specific, below)
    -> concat -> joint BLSTM block -> one MLP head per target -> (B, L, n_targets)

Gates: jca, rjca take the block's output X^(T). dca: ``relu(w0 X^(0) + w1 X^(T))`` with
``w = softmax(Linear_{d_m->2}(X^(T)) / tau)``. grjca and hgrjca have no public code; they are reconstructed from
the paper's abstract and the DCA gate (see :class:`GRJCA`, :class:`HGRJCA`).

The block takes two or three modalities (its equations do not depend on the count); the published models are
audio-visual. Optional audio-guided attention over spatial visual maps (``visual_positions > 1``) needs audio.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from emofusion.errors import ConfigError
from emofusion.models.blocks import (
    AudioGuidedVisualAttention,
    BLSTMBlock,
    CandidateGate,
    DCAGate,
    HierarchicalGate,
    JointCrossAttention,
    NoGuide,
    RegressionHeads,
    TakeLast,
    l2_normalize,
    xavier_init,
)
from emofusion.models.config import FusionConfig
from emofusion.models.registry import FusionModel, register_model


@dataclasses.dataclass(frozen=True, kw_only=True)
class RJCAConfig(FusionConfig):
    """Config of the joint cross-attention family (defaults: what the published RJCA/DCA code computes).

    seq_len: L, baked into the block's time-mixing L x L matrices (16 in the published clip-level setup).
    num_iter: block iterations, each with its own weights (published RJCA code 1, DCA code 2).
    attn_dropout: dropout on the correlation matrices and the block's residual branch.
    lstm_layers: layers of every BLSTM block.
    branch_dropout: dropout of the per-modality BLSTM blocks (between layers and before their Linear).
    fusion_width: output width of the joint BLSTM block; None -> half the joint width (1024 -> 512 published).
    fusion_dropout: dropout of the joint BLSTM block.
    head_hidden, head_dropout: the per-target MLP heads.
    gate_tau: softmax temperature of the dca/grjca/hgrjca gates.
    visual_positions: P > 1 when the visual feature is a spatial map flattened channel-major to width C * P; it is
        then pooled by audio-guided attention to width C. 1 (pooled features) skips that stage.
    spatial_reshape: "permute" (correct, default) or "faithful" (the published code's reshape of the flatten).
    spatial_audio: "shared" (the audio term added to every position, as the formula says; default) or
        "per_position" (the published code's broadcast: component p of the audio term added to every score unit
        of position p; needs the score width to equal visual_positions).
    spatial_embed, spatial_score: hidden widths of the spatial attention; None -> C and P (as published).
    """

    seq_len: int = 16
    num_iter: int = 2
    attn_dropout: float = 0.6
    lstm_layers: int = 2
    branch_dropout: float = 0.1
    fusion_width: int | None = None
    fusion_dropout: float = 0.0
    head_hidden: int = 128
    head_dropout: float = 0.6
    gate_tau: float = 0.1
    visual_positions: int = 1
    spatial_reshape: str = "permute"
    spatial_audio: str = "shared"
    spatial_embed: int | None = None
    spatial_score: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_iter < 1:
            raise ConfigError(f"num_iter must be at least 1, got {self.num_iter}")
        if self.gate_tau <= 0:
            raise ConfigError(f"gate_tau must be positive, got {self.gate_tau}")
        if self.spatial_reshape not in ("permute", "faithful"):
            raise ConfigError(f"spatial_reshape must be 'permute' or 'faithful', got {self.spatial_reshape!r}")
        if self.spatial_audio not in ("shared", "per_position"):
            raise ConfigError(f"spatial_audio must be 'shared' or 'per_position', got {self.spatial_audio!r}")
        if self.visual_positions > 1:
            dims = self.dim
            if "visual" not in dims or "audio" not in dims:
                raise ConfigError("visual_positions > 1 (audio-guided spatial attention) needs visual and audio")
            if dims["visual"] % self.visual_positions:
                raise ConfigError(
                    f"dims['visual']={dims['visual']} is not a multiple of "
                    f"visual_positions={self.visual_positions} (expected channels x positions)"
                )


@dataclasses.dataclass(frozen=True, kw_only=True)
class JCAConfig(RJCAConfig):
    """:class:`RJCAConfig` with JCA's single iteration as the default."""

    num_iter: int = 1


class JointAttentionFusion(FusionModel):
    """Shared body of the family; subclasses choose the per-modality branch and the gate.

    ``forward(feats, masks)``: ``feats[m]: (B, L, d_m)``, ``masks[m]: bool (B, L)`` (True = valid; values at
    invalid steps are zeroed at the entry and never reach the output) -> ``(B, L, n_targets)``.
    """

    config_class: ClassVar[type[FusionConfig]] = RJCAConfig
    fixed_length = True
    branch_blstm: ClassVar[bool] = True

    def __init__(self, *, config: RJCAConfig) -> None:
        super().__init__(config=config)
        config.require_modalities(self.model_name, least=2, most=3)
        widths = config.dim
        self.spatial = nn.ModuleDict({m: NoGuide() for m in widths})
        if config.visual_positions > 1:
            channels = widths["visual"] // config.visual_positions
            self.spatial["visual"] = AudioGuidedVisualAttention(
                positions=config.visual_positions,
                channels=channels,
                audio_dim=widths["audio"],
                out_dim=channels,
                embed_dim=config.spatial_embed or channels,
                score_dim=config.spatial_score or config.visual_positions,
                faithful_reshape=config.spatial_reshape == "faithful",
                audio_per_position=config.spatial_audio == "per_position",
            )
            widths["visual"] = channels
        self.branches = nn.ModuleDict(
            {
                m: BLSTMBlock(in_dim=w, out_dim=w, num_layers=config.lstm_layers, dropout=config.branch_dropout)
                if self.branch_blstm
                else nn.Identity()
                for m, w in widths.items()
            }
        )
        self.block = JointCrossAttention(
            dims=list(widths.values()), seq_len=config.seq_len, num_iter=config.num_iter, dropout=config.attn_dropout
        )
        self.gates = nn.ModuleDict({m: self.make_gate(dim=w, config=config) for m, w in widths.items()})
        joint = sum(widths.values())
        fusion_width = config.fusion_width or max(1, joint // 2)
        self.fusion = BLSTMBlock(
            in_dim=joint, out_dim=fusion_width, num_layers=config.lstm_layers, dropout=config.fusion_dropout
        )
        self.heads = RegressionHeads(
            in_dim=fusion_width, n_targets=config.n_targets, hidden=config.head_hidden, dropout=config.head_dropout
        )
        # Audio first: the published code feeds the audio branch's output to the spatial visual attention.
        self.branch_order = sorted(widths, key=lambda m: m != "audio")
        xavier_init(self)

    def make_gate(self, *, dim: int, config: RJCAConfig) -> nn.Module:
        """Gate over ``[X^(0), ..., X^(T)]`` (each ``(B, L, dim)``) -> ``(B, L, dim)``."""
        return TakeLast()

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        xs, _ = self.prepare(feats, masks)
        xs = {m: l2_normalize(x) for m, x in xs.items()}
        for m in self.branch_order:
            xs[m] = self.branches[m](self.spatial[m](xs[m], xs.get("audio")))
        inputs = [xs[m] for m in self.modalities]
        states = self.block(inputs)  # num_iter x per-modality (B, L, d_m)
        gated = [
            self.gates[m]([x0, *(state[i] for state in states)])
            for i, (m, x0) in enumerate(zip(self.modalities, inputs, strict=True))
        ]
        return self.heads(self.fusion(torch.cat(gated, dim=-1)))  # (B, L, d) -> (B, L, fusion) -> (B, L, n_targets)


@register_model("jca")
class JCA(JointAttentionFusion):
    """Joint cross-attention (CVPR-W 2022): L2-normalise -> (spatial attention) -> block (1 iteration by default)
    -> concat -> joint BLSTM -> heads. No per-modality BLSTM."""

    config_class = JCAConfig
    branch_blstm = False


@register_model("rjca")
class RJCA(JointAttentionFusion):
    """Recursive joint cross-attention with BLSTMs (ICASSP 2023): per-modality BLSTM blocks before the block."""


@register_model("dca")
class DCA(JointAttentionFusion):
    """Dynamic cross-attention (ICME 2024): rjca, then per modality and step ``relu(w0 X + w1 X*)`` with
    ``w = softmax(Linear_{d_m->2}(X*) / tau)``; X the block's input, X* its output. The gate sees only X*."""

    def make_gate(self, *, dim: int, config: RJCAConfig) -> nn.Module:
        return DCAGate(dim=dim, tau=config.gate_tau)


@register_model("grjca")
class GRJCA(JointAttentionFusion):
    """Gated RJCA (CVPR-W 2025). RECONSTRUCTION: no public code; built from the paper's abstract and the DCA gate.

    Candidates ``X^(0)`` (block input) and ``X^(1..T)`` (each iteration's output; the recursion itself runs on the
    ungated outputs). Per modality and step ``w = softmax(Linear_{(T+1) d_m -> T+1}(concat of candidates) / tau)``,
    output ``relu(sum_l w_l X^(l))``. With T = 1 and the gate's X^(0) columns zero it equals :class:`DCA` exactly.
    """

    def make_gate(self, *, dim: int, config: RJCAConfig) -> nn.Module:
        return CandidateGate(dim=dim, n_candidates=config.num_iter + 1, tau=config.gate_tau, sees="all")


@register_model("hgrjca")
class HGRJCA(JointAttentionFusion):
    """Hierarchical gated RJCA (CVPR-W 2025). RECONSTRUCTION: no public code; built from the paper's abstract.

    At each iteration l a DCA-style gate mixes ``X^(l-1)`` and ``X^(l)`` (seeing ``X^(l)``); a high-level gate
    ``softmax(Linear(concat of the T gated outputs) / tau)`` then mixes those T outputs. The recursion runs on the
    ungated outputs. With T = 1 it is :class:`DCA`.
    """

    def make_gate(self, *, dim: int, config: RJCAConfig) -> nn.Module:
        return HierarchicalGate(dim=dim, num_iter=config.num_iter, tau=config.gate_tau)
