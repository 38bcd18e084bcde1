"""The steps of one training epoch: the optimisation objects of a preset (:class:`Optimisation`), one pass of
optimisation (:func:`train_epoch`), validation at the frame level (:func:`validate`), as timm's train.py splits
``train_one_epoch`` and ``validate``.

Optimiser and schedule from the resolved preset (Adam/AdamW, linear warm-up, ReduceLROnPlateau on the validation
mean CCC), float16 autocast with a gradient scaler on CUDA (or bfloat16 autocast, ``amp: bf16``, on any device),
gradient clipping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emofusion.fusion_data.predict import autocast_dtype, fold_clip_labels, predict_frames
from emofusion.metrics import split_ccc


@dataclass
class Optimisation:
    """The optimiser, the plateau scheduler (None: no schedule), the gradient scaler and the loss of a run, built
    from its preset's ``training`` (:meth:`build`)."""

    opt: Any
    sched: Any
    scaler: Any
    loss_fn: Any
    training: Mapping[str, Any]

    @classmethod
    def build(cls, model, training: Mapping[str, Any], device) -> Optimisation:
        import torch

        from emofusion.models import CCCLoss

        tr = training
        params = [p for p in model.parameters() if p.requires_grad]
        opt_cls = torch.optim.AdamW if tr["optimizer"] == "adamw" else torch.optim.Adam
        opt = opt_cls(params, lr=tr["lr"], weight_decay=tr["weight_decay"])
        sched = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=tr["plateau_factor"], patience=tr["plateau_patience"]
            )
            if tr["scheduler"] == "plateau"
            else None
        )
        scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype(tr["amp"], device) == torch.float16)
        return cls(opt=opt, sched=sched, scaler=scaler, loss_fn=CCCLoss(reduction=tr["loss_reduction"]), training=tr)

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def warm_up(self, epoch: int) -> None:
        """Linear warm-up: epoch ``e`` < warmup_epochs trains at ``lr * (e + 1) / warmup_epochs``."""
        warm = int(self.training["warmup_epochs"])
        if epoch < warm:
            for g in self.opt.param_groups:
                g["lr"] = self.training["lr"] * (epoch + 1) / warm

    def end_epoch(self, epoch: int, score: float) -> None:
        """The plateau schedule steps on the validation mean CCC once warm-up is over."""
        if self.sched is not None and epoch >= int(self.training["warmup_epochs"]):
            self.sched.step(score)

    def state_dict(self) -> dict[str, Any]:
        """The entries of ``resume.pt`` these objects own."""
        return {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else {},
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def train_epoch(
    model, batches, *, opt, scaler, loss_fn, device, amp: bool | str, grad_clip: float | None
) -> list[float]:
    """One pass of optimisation over ``batches`` (dicts of :meth:`FusionData.batch`); the loss of each batch.
    ``amp``: a preset's value (see :func:`autocast_dtype`); ``scaler`` enabled for float16 only."""
    import torch

    dtype = autocast_dtype(amp, device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    losses = []
    for batch in batches:
        feats = {m: x.to(device, non_blocking=True) for m, x in batch["feats"].items()}
        masks = {m: x.to(device, non_blocking=True) for m, x in batch["masks"].items()}
        target, tmask = batch["target"].to(device), batch["target_mask"].to(device)
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pred = model(feats, masks)
        loss = loss_fn(pred.float(), target, tmask)  # float32 whatever the autocast state
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(opt)
        scaler.update()
        losses.append(loss.detach())
    return [float(x) for x in losses]  # one device sync at the end, not one per batch


class Validation:
    """The validation clips of a fold, their labels read once; :meth:`__call__` scores a model on them at the
    frame level (windows reassembled as `emofusion evaluate` does)."""

    def __init__(self, data, *, batch_size: int, amp: bool | str, workers: int = 0):
        self.data, self.batch_size, self.amp, self.workers = data, batch_size, amp, workers
        self.clips = data.clips_of("validation")
        self.windows = data.windows(self.clips, data.windowing.hop)
        self.labels = {c: fold_clip_labels(data, c) for c in self.clips}

    def __call__(self, model, *, device, loss_fn) -> tuple[dict[str, Any], float]:
        """``split_ccc`` scores of ``model`` on the validation clips, and its mean validation loss."""
        frames, loss = predict_frames(
            model,
            self.data,
            self.clips,
            device=device,
            batch_size=self.batch_size,
            amp=self.amp,
            loss_fn=loss_fn,
            workers=self.workers,
        )
        labels = {c: self.labels[c][0] for c in self.clips}
        masks = {c: self.labels[c][1] for c in self.clips}
        return split_ccc(frames, labels, masks), loss
