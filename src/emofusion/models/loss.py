"""CCC loss: ``1 - CCC`` per target, summed over targets, over valid positions only.

Two reductions: ``flat`` (one CCC per target over every valid position of the batch, as the RJCA/DCA code) and
``per_sequence`` (a CCC per window and target, averaged over the windows with at least one valid position, as the
RJCMA code). Invalid positions are excluded from every moment, never zero-filled into them. Moments are
population moments computed in float32 whatever the input dtype or autocast state, with ``eps`` (default 1e-6,
representable in fp16 and fp32, unlike the published 1e-50) added to the denominator; where that denominator is
0 (constant and equal series, or no valid position) the CCC is 0 and the loss 1, as
:func:`emofusion.metrics.ccc` reports.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

REDUCTIONS = ("flat", "per_sequence")


def ccc_loss(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, *, reduction: str = "flat", eps: float = 1e-6
) -> Tensor:
    """``sum_targets (1 - CCC)`` as a float32 scalar.

    pred, target: ``(B, L, T)`` (or ``(B, L)`` for one target). mask: bool ``(B, L)`` or ``(B, L, T)``,
    True = valid (e.g. label != -5 and not padding); None = all valid. Values at invalid positions (NaN included)
    do not affect the loss or its gradient.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if pred.shape != target.shape:
        raise ValueError(f"ccc_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.dim() == 2:
        pred, target = pred.unsqueeze(-1), target.unsqueeze(-1)  # (B, L) -> (B, L, 1)
        mask = None if mask is None else mask.reshape(*mask.shape[:2], -1)
    if pred.dim() != 3:
        raise ValueError(f"ccc_loss: expected (B, L, T) predictions, got {tuple(pred.shape)}")
    if mask is None:
        mask = torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    elif mask.dim() == 2:
        mask = mask.unsqueeze(-1)  # (B, L) -> (B, L, 1), broadcast over targets
    mask = mask.expand(pred.shape).bool()
    dims = (0, 1) if reduction == "flat" else (1,)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        x = torch.where(mask, pred.float(), 0.0)
        y = torch.where(mask, target.float(), 0.0)
        w = mask.float()
        n = w.sum(dims, keepdim=True)  # valid positions per target (flat) or per window and target
        count = n.clamp_min(1.0)
        mx, my = x.sum(dims, keepdim=True) / count, y.sum(dims, keepdim=True) / count
        dx, dy = (x - mx) * w, (y - my) * w  # centred, zero at invalid positions
        vx, vy = (dx * dx).sum(dims, keepdim=True) / count, (dy * dy).sum(dims, keepdim=True) / count
        cov = (dx * dy).sum(dims, keepdim=True) / count
        ccc = 2.0 * cov / (vx + vy + (mx - my) ** 2 + eps)  # (1, 1, T) or (B, 1, T)
        if reduction == "per_sequence":
            has = (n > 0).float()
            ccc = (ccc * has).sum(0, keepdim=True) / has.sum(0, keepdim=True).clamp_min(1.0)  # windows' mean
        return (1.0 - ccc).sum()


class CCCLoss(nn.Module):
    """Module form of :func:`ccc_loss`: ``loss(pred, target, mask)``."""

    def __init__(self, *, reduction: str = "flat", eps: float = 1e-6) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return ccc_loss(pred, target, mask, reduction=self.reduction, eps=self.eps)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, eps={self.eps}"
