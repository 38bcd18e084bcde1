"""CCC loss: agrees with emofusion.metrics.ccc, ignores masked positions, safe in low precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emofusion.metrics import ccc
from emofusion.models import CCCLoss, ccc_loss

B, L, T = 4, 9, 2


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(B, L, T, generator=g, dtype=torch.float64)
    target = 0.5 * pred + torch.randn(B, L, T, generator=g, dtype=torch.float64)
    mask = torch.rand(B, L, T, generator=g) > 0.25
    mask[2] = False  # a window with no valid position
    target = torch.where(mask, target, -5.0)  # Aff-Wild2's "not annotated"
    return pred, target, mask


def expected_flat(pred, target, mask) -> float:
    return sum(1 - ccc(pred[..., t].numpy(), target[..., t].numpy(), mask[..., t].numpy()) for t in range(T))


def expected_per_sequence(pred, target, mask) -> float:
    total = 0.0
    for t in range(T):
        values = [
            ccc(pred[b, :, t].numpy(), target[b, :, t].numpy(), mask[b, :, t].numpy())
            for b in range(B)
            if mask[b, :, t].any()
        ]
        total += 1 - float(np.mean(values))
    return total


def test_flat_equals_one_minus_metric_ccc_per_target():
    pred, target, mask = data()
    loss = ccc_loss(pred, target, mask, reduction="flat")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected_flat(pred, target, mask), abs=1e-5)
    # The mask matters: ignoring it (the -5 labels count) gives another value.
    assert abs(ccc_loss(pred, target).item() - loss.item()) > 1e-2


def test_per_sequence_averages_windows_with_a_valid_position():
    pred, target, mask = data()
    loss = ccc_loss(pred, target, mask, reduction="per_sequence")
    assert loss.item() == pytest.approx(expected_per_sequence(pred, target, mask), abs=1e-5)
    assert abs(loss.item() - ccc_loss(pred, target, mask, reduction="flat").item()) > 1e-3


def test_step_mask_broadcasts_over_targets():
    pred, target, _ = data()
    step_mask = torch.rand(B, L, generator=torch.Generator().manual_seed(3)) > 0.3
    full = step_mask.unsqueeze(-1).expand(B, L, T)
    assert ccc_loss(pred, target, step_mask).item() == pytest.approx(expected_flat(pred, target, full), abs=1e-5)


@pytest.mark.parametrize("reduction", ["flat", "per_sequence"])
def test_masked_positions_do_not_affect_loss_or_gradient(reduction):
    pred, target, mask = data()
    pred = pred.float().requires_grad_()
    loss = ccc_loss(pred, target.float(), mask, reduction=reduction)
    loss.backward()
    grad = pred.grad.clone()
    assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()

    garbage = pred.detach().clone()
    garbage[~mask] = torch.nan
    noisy_target = torch.where(mask, target.float(), torch.inf)
    garbage.requires_grad_()
    loss2 = ccc_loss(garbage, noisy_target, mask, reduction=reduction)
    loss2.backward()
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-6)
    torch.testing.assert_close(garbage.grad, grad)


def test_degenerate_inputs_give_ccc_zero_not_nan():
    const = torch.full((2, 5, T), 0.3, requires_grad=True)
    loss = ccc_loss(const, torch.full((2, 5, T), 0.3))
    assert loss.item() == pytest.approx(T)  # CCC 0 per target, as the metric reports
    loss.backward()
    assert torch.isfinite(const.grad).all()
    nothing = ccc_loss(
        torch.randn(2, 5, T), torch.randn(2, 5, T), torch.zeros(2, 5, dtype=torch.bool), reduction="per_sequence"
    )
    assert nothing.item() == pytest.approx(T)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["flat", "per_sequence"])
def test_low_precision_near_constant_inputs_are_finite(dtype, reduction):
    assert torch.tensor(1e-6, dtype=torch.float16) > 0  # the eps survives fp16 (1e-50 does not)
    g = torch.Generator().manual_seed(0)
    pred = (0.5 + 1e-4 * torch.randn(B, L, T, generator=g)).to(dtype).requires_grad_()
    target = (0.5 + 1e-4 * torch.randn(B, L, T, generator=g)).to(dtype)
    loss = ccc_loss(pred, target, reduction=reduction)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and 0 <= loss.item() <= 2 * T
    assert torch.isfinite(pred.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = CCCLoss(reduction=reduction)(pred.float() @ torch.eye(T), target.float())
    assert auto.dtype == torch.float32 and torch.isfinite(auto)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        ccc_loss(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), reduction="mean")
    with pytest.raises(ValueError, match="differ"):
        ccc_loss(torch.zeros(1, 2, 1), torch.zeros(1, 2, 2))
