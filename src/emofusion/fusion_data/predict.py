"""Predictions of a fusion model over the windows of a :class:`~emofusion.fusion_data.data.FusionData`, shared by
training (validation every epoch), evaluation (every frame of every clip) and predict (every frame of a video).

- :func:`predict_steps` runs a model over windows in batches; :func:`predict_frames` reassembles them into one
  prediction per frame of every clip (overlaps averaged, see :func:`emofusion.fusion_data.windows.reassemble`),
  clipped to [-1, 1].
- :func:`autocast_dtype`: the autocast dtype of a preset's ``amp``, for training and prediction alike.
- :func:`fold_clip_labels`: the labels of one clip of a fold, aligned with its frames.
"""

from __future__ import annotations

import numpy as np

from emofusion.fusion_data.windows import reassemble
from emofusion.metrics import TARGETS


def autocast_dtype(amp: bool | str, device):
    """The autocast dtype of a preset's ``amp`` on ``device``: True -> float16 on CUDA (float32 elsewhere),
    "bf16" -> bfloat16 anywhere, False -> None (float32)."""
    import torch

    if amp == "bf16":
        return torch.bfloat16
    if amp is True and device.type == "cuda":
        return torch.float16
    return None


def predict_steps(
    model,
    data,
    windows: np.ndarray,
    *,
    device,
    batch_size: int,
    amp: bool | str = False,
    loss_fn=None,
    workers: int = 0,
) -> tuple[np.ndarray, float]:
    """Step-level predictions ``(W, L, T)`` float32 of ``windows`` in order, and the mean loss over the batches
    (``loss_fn(pred, target, mask)``; NaN without one)."""
    import torch

    batches = [list(range(i, min(i + batch_size, len(windows)))) for i in range(0, len(windows), batch_size)]
    loader = data.batches(windows, batches, workers=workers)
    dtype = autocast_dtype(amp, device)
    outs, losses = [], []
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            feats = {m: x.to(device, non_blocking=True) for m, x in batch["feats"].items()}
            masks = {m: x.to(device, non_blocking=True) for m, x in batch["masks"].items()}
            with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                pred = model(feats, masks)
            if loss_fn is not None:
                losses.append(float(loss_fn(pred, batch["target"].to(device), batch["target_mask"].to(device))))
            outs.append(pred.float().cpu().numpy())
    preds = np.concatenate(outs) if outs else np.zeros((0, data.windowing.steps, len(TARGETS)), np.float32)
    return preds, float(np.mean(losses)) if losses else float("nan")


def predict_frames(
    model, data, clips: list[str], *, device, batch_size: int, amp: bool | str = False, loss_fn=None, workers: int = 0
) -> tuple[dict[str, np.ndarray], float]:
    """``{clip: (N, 2)}`` float32: exactly one prediction per frame, clipped to [-1, 1]; and the mean loss over
    the batches of windows (:func:`predict_steps`; NaN without ``loss_fn``)."""
    windows = data.windows(clips, data.windowing.hop)
    steps, loss = predict_steps(
        model, data, windows, device=device, batch_size=batch_size, amp=amp, loss_fn=loss_fn, workers=workers
    )
    position = {c: i for i, c in enumerate(clips)}
    local = windows.copy()
    local[:, 0] = [position[data.clips[i]] for i in windows[:, 0]]  # index into data.clips -> into clips
    frames = reassemble(steps, local, clips, data.frames, data.windowing)
    return {c: np.clip(v, -1.0, 1.0) for c, v in frames.items()}, loss


def fold_clip_labels(data, clip: str) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2)`` labels and validity of one clip of a :class:`FusionData` (already read and aligned; cf.
    :func:`emofusion.labels.clip_labels`, which reads an annotation file)."""
    return data.target.of_clip(clip)
