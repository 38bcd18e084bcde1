"""Building blocks shared by the fusion models, in dependency order.

Shapes: B batch, L time steps, D or d_m a modality's width, d the joint width (sum over modalities). Every
tensor is batch-first ``(B, L, D)`` unless a docstring says otherwise. Blocks take no masks unless they need
them: the models zero invalid steps at the entry, so later blocks only ever see values derived from valid data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from emofusion.errors import ConfigError


def l2_normalize(x: Tensor) -> Tensor:
    """Unit L2 norm per feature vector (last dim); an all-zero vector (a padded step) stays zero."""
    return F.normalize(x, p=2.0, dim=-1, eps=1e-12)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear (the published RJCA init); LSTMs keep PyTorch's
    default init and the learned initial states their own xavier init, as in the published code."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class RegressionHeads(nn.Module):
    """One MLP per target, ``Linear(D, hidden) - ReLU - Dropout - Linear(hidden, 1)``; no output activation.

    ``(B, L, D) -> (B, L, n_targets)``. Predictions are clipped to [-1, 1] only at evaluation, not here.
    """

    def __init__(self, *, in_dim: int, n_targets: int, hidden: int = 128, dropout: float = 0.6) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
            for _ in range(n_targets)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)  # (B, L, n_targets)


class BLSTMBlock(nn.Module):
    """Bidirectional LSTM with a learned initial state, then ``concat(input, output) -> Dropout -> Linear ->
    L2-normalise``.

    ``(B, L, in_dim) -> (B, L, out_dim)``. The initial state is one parameter ``(2 * 2 * layers, hidden)``: the first
    half is h0, the second c0, shared across the batch. ``hidden`` defaults to ``ceil(out_dim / 2)`` per direction.
    ``dropout`` applies between LSTM layers and before the Linear. The LSTM reads every step, padded ones too
    (as zeros: the models zero them at the entry); ``mask`` is accepted for a uniform temporal-encoder interface.
    """

    def __init__(
        self, *, in_dim: int, out_dim: int, num_layers: int = 2, dropout: float = 0.1, hidden: int | None = None
    ) -> None:
        super().__init__()
        hidden = hidden or (out_dim + 1) // 2
        self.num_layers = num_layers
        self.lstm = nn.LSTM(
            in_dim,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.init_state = nn.Parameter(nn.init.xavier_uniform_(torch.empty(2 * 2 * num_layers, hidden)))
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim + 2 * hidden, out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B = x.shape[0]
        state = self.init_state.unsqueeze(1).expand(-1, B, -1)  # (4 * layers, B, hidden)
        h0, c0 = state.chunk(2, dim=0)  # each (2 * layers, B, hidden): directions x layers
        y, _ = self.lstm(x, (h0.contiguous(), c0.contiguous()))  # (B, L, 2 * hidden)
        return l2_normalize(self.proj(self.dropout(torch.cat([x, y], dim=-1))))


def _positions_permuted(v: Tensor, positions: int) -> Tensor:
    """Channel-major flatten ``(B, L, C * P)`` to ``(B, L, P, C)``, the correct inverse of ``(C, H, W).flatten()``."""
    B, L, D = v.shape
    return v.reshape(B, L, D // positions, positions).transpose(2, 3)  # (B, L, C, P) -> (B, L, P, C)


def _positions_faithful(v: Tensor, positions: int) -> Tensor:
    """The published code's reading: ``(B, L, C * P)`` reshaped straight to ``(B, L, P, C)``, which mixes channels
    and positions of a channel-major flatten."""
    B, L, D = v.shape
    return v.reshape(B, L, positions, D // positions)  # (B, L, P, C)


class AudioGuidedVisualAttention(nn.Module):
    """Attention over the spatial positions of a visual feature map, guided by the audio feature of the same step.

    ``v: (B, L, C * P)`` (a channel-major flatten of ``(C, H, W)``, P = H * W) and ``a: (B, L, d_a)`` ->
    ``(B, L, out_dim)``. Score per position ``w^T tanh(W_v relu(U v_p) + W_a relu(U' a))``, softmax over
    positions, weighted sum of the raw position vectors, then a Linear. Does not mix time steps.

    Two published-code quirks, each behind a flag (the defaults compute the formula as written):
    ``faithful_reshape`` reads the channel-major flatten as if position-major (scrambling channels and
    positions); ``audio_per_position`` unsqueezes the audio term ``W_a relu(U' a)`` (width S) on the last axis,
    so its component p is added to every score unit of position p instead of the whole vector to every position.
    That broadcast only exists when S == P (49 = 7 x 7 in the published code); anything else is a ConfigError.
    """

    def __init__(
        self,
        *,
        positions: int,
        channels: int,
        audio_dim: int,
        out_dim: int,
        embed_dim: int,
        score_dim: int,
        faithful_reshape: bool = False,
        audio_per_position: bool = False,
    ) -> None:
        super().__init__()
        if audio_per_position and score_dim != positions:
            raise ConfigError(
                f"the published per-position audio term (spatial_audio='per_position') needs the "
                f"score width to equal the number of positions, got spatial_score={score_dim} for "
                f"visual_positions={positions}; leave spatial_score unset (it defaults to the "
                "positions) or use spatial_audio='shared'"
            )
        self.positions = positions
        self.to_positions = _positions_faithful if faithful_reshape else _positions_permuted
        # (B, L, S) -> (B, L, 1, S): same guide for every position; or (B, L, P, 1): component p for position p.
        self.guide_axis = -1 if audio_per_position else 2
        self.visual_embed = nn.Linear(channels, embed_dim)  # U
        self.audio_embed = nn.Linear(audio_dim, embed_dim)  # U'
        self.visual_score = nn.Linear(embed_dim, score_dim, bias=False)  # W_v
        self.audio_score = nn.Linear(embed_dim, score_dim, bias=False)  # W_a
        self.score = nn.Linear(score_dim, 1, bias=False)  # w
        self.out = nn.Linear(channels, out_dim)

    def forward(self, v: Tensor, a: Tensor) -> Tensor:
        maps = self.to_positions(v, self.positions)  # (B, L, P, C)
        guide = self.audio_score(F.relu(self.audio_embed(a))).unsqueeze(self.guide_axis)  # (B,L,1,S) or (B,L,P,1)
        content = self.visual_score(F.relu(self.visual_embed(maps)))  # (B, L, P, score_dim)
        alpha = self.score(torch.tanh(content + guide)).squeeze(-1).softmax(dim=-1)  # (B, L, P)
        pooled = (alpha.unsqueeze(-1) * maps).sum(dim=2)  # (B, L, C)
        return self.out(pooled)


class JointCrossAttentionLayer(nn.Module):
    """One iteration of the joint cross-attention block, for any number (>= 2) of modalities.

    ``xs[m]: (B, L, d_m)`` -> same shapes. For each modality m, all from the same joint J of this iteration:
    ``J = concat(xs)`` (B, L, d); ``J' = J W_q + b`` (Identity with ``joint_projection=False``, the RJCMA code
    quirk); ``K_m = Linear_{L->L}(X_m^T)`` (B, d_m, L); ``C_m = dropout(tanh(K_m J' / sqrt(d)))`` (B, d_m, d);
    ``H_m = relu(tanh((X_m W_v + b) C_m))`` (B, L, d); ``X_m + dropout(relu(H_m W_h + b))``. No softmax.
    """

    def __init__(
        self, *, dims: Sequence[int], seq_len: int, dropout: float = 0.6, joint_projection: bool = True
    ) -> None:
        super().__init__()
        d = sum(dims)
        self.scale = 1.0 / math.sqrt(d)
        self.joint = nn.Linear(d, d) if joint_projection else nn.Identity()
        self.key = nn.ModuleList(nn.Linear(seq_len, seq_len) for _ in dims)  # mixes time steps
        self.value = nn.ModuleList(nn.Linear(dm, dm) for dm in dims)
        self.out = nn.ModuleList(nn.Linear(d, dm) for dm in dims)
        self.corr_dropout = nn.Dropout(dropout)
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        joint = self.joint(torch.cat(list(xs), dim=-1))  # (B, L, d)
        out = []
        for x, key, value, proj in zip(xs, self.key, self.value, self.out, strict=True):
            k = key(x.transpose(1, 2))  # (B, D, L): each feature's time series mixed over steps
            corr = self.corr_dropout(torch.tanh(k @ joint * self.scale))  # (B, D, d): contracted over time
            h = F.relu(torch.tanh(value(x) @ corr))  # (B, L, d)
            out.append(x + self.out_dropout(F.relu(proj(h))))
        return out


class JointCrossAttention(nn.Module):
    """``num_iter`` stacked :class:`JointCrossAttentionLayer` s with separate weights, each feeding the next.

    ``xs[m]: (B, L, d_m)`` -> a list of ``num_iter`` states, each the per-modality outputs of one iteration
    (the last is the block's output; the gated models use all of them).
    """

    def __init__(
        self,
        *,
        dims: Sequence[int],
        seq_len: int,
        num_iter: int = 2,
        dropout: float = 0.6,
        joint_projection: bool = True,
    ) -> None:
        super().__init__()
        if num_iter < 1:
            raise ValueError(f"num_iter must be at least 1, got {num_iter}")
        self.layers = nn.ModuleList(
            JointCrossAttentionLayer(dims=dims, seq_len=seq_len, dropout=dropout, joint_projection=joint_projection)
            for _ in range(num_iter)
        )

    def forward(self, xs: Sequence[Tensor]) -> list[list[Tensor]]:
        states: list[list[Tensor]] = []
        for layer in self.layers:
            states.append(layer(states[-1] if states else xs))
        return states


class NoGuide(nn.Module):
    """Stand-in for :class:`AudioGuidedVisualAttention` when there is nothing to pool: ``(x, guide) -> x``."""

    def forward(self, x: Tensor, guide: Tensor | None = None) -> Tensor:
        return x


class TakeLast(nn.Module):
    """The "gate" of the ungated models: the last candidate, i.e. the block's output."""

    def forward(self, candidates: Sequence[Tensor]) -> Tensor:
        return candidates[-1]


class CandidateGate(nn.Module):
    """Per-step softmax gate over K candidates: ``relu(sum_k w_k X_k)``, ``w = softmax(Linear(g) / tau)``.

    ``candidates``: K tensors ``(B, L, D)`` -> ``(B, L, D)``. The gate input g is the last candidate
    (``sees="last"``, the DCA gate: only the attended feature) or all candidates concatenated (``sees="all"``).
    As tau -> 0 the softmax becomes one-hot and the gate selects one candidate.
    """

    def __init__(self, *, dim: int, n_candidates: int, tau: float = 0.1, sees: str = "last") -> None:
        super().__init__()
        if sees not in ("last", "all"):
            raise ValueError(f"sees must be 'last' or 'all', got {sees!r}")
        if tau <= 0:
            raise ValueError(f"gate temperature tau must be positive, got {tau}")
        self.tau = tau
        self.sees_all = sees == "all"
        self.proj = nn.Linear(dim * n_candidates if self.sees_all else dim, n_candidates)

    def weights(self, candidates: Sequence[Tensor]) -> Tensor:
        """Gate weights ``(B, L, K)``, summing to 1 over K."""
        g = torch.cat(list(candidates), dim=-1) if self.sees_all else candidates[-1]
        return torch.softmax(self.proj(g) / self.tau, dim=-1)

    def forward(self, candidates: Sequence[Tensor]) -> Tensor:
        w = self.weights(candidates)  # (B, L, K)
        stacked = torch.stack(list(candidates), dim=-1)  # (B, L, D, K)
        return F.relu((stacked * w.unsqueeze(-2)).sum(dim=-1))


class DCAGate(CandidateGate):
    """The DCA gate: ``relu(w0 X + w1 X*)``, ``w = softmax(Linear_{D->2}(X*) / tau)``, X the block's input and X*
    its output. Called with all candidates ``[X^(0), ..., X^(T)]``, it uses the first and the last."""

    def __init__(self, *, dim: int, tau: float = 0.1) -> None:
        super().__init__(dim=dim, n_candidates=2, tau=tau, sees="last")

    def forward(self, candidates: Sequence[Tensor]) -> Tensor:
        return super().forward([candidates[0], candidates[-1]])


class HierarchicalGate(nn.Module):
    """HGRJCA gating over ``[X^(0), ..., X^(T)]``: a DCA gate per iteration l mixing ``X^(l-1)`` and ``X^(l)``, then
    a high-level gate (sees all, ``softmax(Linear(concat of the T gated outputs) / tau)``) over the T gated outputs.
    With T = 1 there is nothing to choose between, so the high-level gate is left out (equals DCA)."""

    def __init__(self, *, dim: int, num_iter: int, tau: float = 0.1) -> None:
        super().__init__()
        self.low = nn.ModuleList(DCAGate(dim=dim, tau=tau) for _ in range(num_iter))
        self.high = CandidateGate(dim=dim, n_candidates=num_iter, tau=tau, sees="all") if num_iter > 1 else TakeLast()

    def forward(self, candidates: Sequence[Tensor]) -> Tensor:
        gated = [gate([prev, cur]) for gate, prev, cur in zip(self.low, candidates[:-1], candidates[1:], strict=True)]
        return self.high(gated)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the features of ``(B, L, C)`` whose batch statistics come from valid steps only.

    ``x: (B, L, C)``, ``mask: bool (B, L)`` -> ``(B, L, C)`` with zeros at invalid steps. With every step valid it
    equals ``nn.BatchNorm1d`` over the ``B * L`` rows (the published computation); padding does not shift the
    statistics and its output cannot carry anything into later time-mixing layers.
    """

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        B, L, C = x.shape
        rows = x.reshape(B * L, C)  # (B, L, C) -> (B * L, C): one row per step, as BatchNorm1d expects
        keep = mask.reshape(B * L)  # (B * L,)
        if self.training and int(keep.sum()) > 1:
            idx = keep.nonzero().squeeze(1)
            normed = super().forward(rows.index_select(0, idx))  # statistics from valid rows only
            out = rows.new_zeros(rows.shape).index_copy(0, idx, normed.to(rows.dtype))
        else:
            # eval, or too few valid rows for batch statistics: running statistics for every row
            out = F.batch_norm(rows, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return out.reshape(B, L, C).masked_fill(~mask.unsqueeze(-1), 0.0)  # (B * L, C) -> (B, L, C)


class TemporalBlock(nn.Module):
    """Residual block of two weight-normed dilated causal Conv1d, LeakyReLU and dropout after each.

    ``(B, C_in, L) -> (B, C_out, L)`` (channels first, as Conv1d). Causal: left padding ``(k - 1) * dilation``, so
    step t sees steps <= t. The residual goes through a 1x1 conv when the widths differ.
    """

    def __init__(self, *, in_ch: int, out_ch: int, kernel_size: int, dilation: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv1 = weight_norm(_conv_init(nn.Conv1d(in_ch, out_ch, kernel_size, dilation=dilation)))
        self.conv2 = weight_norm(_conv_init(nn.Conv1d(out_ch, out_ch, kernel_size, dilation=dilation)))
        self.act = nn.LeakyReLU()
        self.dropout = nn.Dropout(dropout)
        self.residual = _conv_init(nn.Conv1d(in_ch, out_ch, 1)) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.dropout(self.act(self.conv1(F.pad(x, (self.pad, 0)))))
        y = self.dropout(self.act(self.conv2(F.pad(y, (self.pad, 0)))))
        return self.act(y + self.residual(x))


def _conv_init(conv: nn.Conv1d) -> nn.Conv1d:
    """N(0, 0.01) weights, the usual TCN init (set before weight norm takes the weight's norm as g)."""
    nn.init.normal_(conv.weight, 0.0, 0.01)
    return conv


class TCNEncoder(nn.Module):
    """Temporal convolutional network (dilation ``2^i`` at level i) then :class:`MaskedBatchNorm1d`.

    ``x: (B, L, in_dim)``, ``mask: bool (B, L)`` -> ``(B, L, channels[-1])``, zeros at invalid steps.
    """

    def __init__(self, *, in_dim: int, channels: Sequence[int], kernel_size: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        widths = [in_dim, *channels]
        self.levels = nn.Sequential(
            *(
                TemporalBlock(
                    in_ch=widths[i], out_ch=widths[i + 1], kernel_size=kernel_size, dilation=2**i, dropout=dropout
                )
                for i in range(len(channels))
            )
        )
        self.norm = MaskedBatchNorm1d(channels[-1])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.levels(x.transpose(1, 2)).transpose(1, 2)  # (B, in_dim, L) -> (B, C, L) -> (B, L, C)
        return self.norm(y, mask)
