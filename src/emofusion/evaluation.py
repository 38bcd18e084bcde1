"""Frame-level predictions from a trained run, CCC per split (PROTOCOL.md), smoothing chosen on held-out data.

- :func:`predict_steps` runs a model over windows in batches; :func:`predict_frames` reassembles them into one
  prediction per frame of every clip (overlaps averaged, see :func:`emofusion.training.windows.reassemble`),
  clipped to [-1, 1].
- :func:`moving_average`: centred, odd window, edges padded with the nearest value (not zeros).
- :func:`choose_window`: the candidate window with the best CCC on the data it is given.
- :func:`evaluate_run`: predictions.parquet and metrics.json of a run folder.

Smoothing is chosen per target and never on the split it is reported for: train and test use the window chosen
on the whole validation split; the validation figure is cross-fitted (windows chosen on one half of the
validation videos are applied to the other half, and the other way round).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import ConfigError, InputError
from emofusion.log import logger
from emofusion.metrics import TARGETS, ccc, split_ccc


def predict_steps(model, data, windows: np.ndarray, *, device, batch_size: int, amp: bool = False,
                  loss_fn=None, workers: int = 0) -> tuple[np.ndarray, float]:
    """Step-level predictions ``(W, L, T)`` float32 of ``windows`` in order, and the mean loss over the batches
    (``loss_fn(pred, target, mask)``; NaN without one)."""
    import torch

    from emofusion.training.loop import autocast_dtype

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


def predict_frames(model, data, clips: list[str], *, device, batch_size: int, amp: bool = False,
                   workers: int = 0) -> dict[str, np.ndarray]:
    """``{clip: (N, 2)}`` float32: exactly one prediction per frame, clipped to [-1, 1]."""
    from emofusion.training.windows import reassemble

    windows = data.windows(clips, data.windowing.hop)
    steps, _ = predict_steps(model, data, windows, device=device, batch_size=batch_size, amp=amp, workers=workers)
    position = {c: i for i, c in enumerate(clips)}
    local = windows.copy()
    local[:, 0] = [position[data.clips[i]] for i in windows[:, 0]]  # index into data.clips -> into clips
    frames = reassemble(steps, local, clips, data.frames, data.windowing)
    return {c: np.clip(v, -1.0, 1.0) for c, v in frames.items()}


def fold_clip_labels(data, clip: str) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2)`` labels and validity of one clip of a :class:`FusionData` (already read and aligned; cf.
    :func:`emofusion.labels.clip_labels`, which reads an annotation file)."""
    i = data.clips.index(clip)
    sl = slice(data.offsets[i], data.offsets[i + 1])
    return data.labels[sl], data.label_valid[sl]


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 with an odd ``window``; edges padded with the nearest value."""
    if window <= 1 or len(x) == 0:
        return x.copy()
    if window % 2 == 0:
        raise ConfigError(f"fusion.smoothing.windows: {window} is even; a centred window must be odd")
    k = window // 2
    padded = np.concatenate([np.repeat(x[:1], k, axis=0), x, np.repeat(x[-1:], k, axis=0)]).astype(np.float64)
    c = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(padded, axis=0)])
    return ((c[window:] - c[:-window]) / window).astype(x.dtype)


def _pooled_ccc(preds: Mapping[str, np.ndarray], labels: Mapping[str, tuple[np.ndarray, np.ndarray]], t: int,
                window: int) -> float:
    clips = sorted(preds)
    p = np.concatenate([moving_average(preds[c][:, t], window) for c in clips])
    y = np.concatenate([labels[c][0][:, t] for c in clips])
    m = np.concatenate([labels[c][1][:, t] for c in clips])
    return ccc(p, y, m)


def choose_window(preds: Mapping[str, np.ndarray], labels: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  candidates: list[int]) -> dict[str, int]:
    """Per target, the candidate window (1 = none) with the best pooled CCC on these clips (ties: the smaller)."""
    out = {}
    for t, name in enumerate(TARGETS):
        scores = [(_pooled_ccc(preds, labels, t, w), -w) for w in sorted(set(candidates) | {1})]
        out[name] = -max(scores)[1]
    return out


def smooth(preds: Mapping[str, np.ndarray], windows: Mapping[str, int]) -> dict[str, np.ndarray]:
    return {c: np.stack([moving_average(p[:, t], windows[name]) for t, name in enumerate(TARGETS)], axis=1)
            for c, p in preds.items()}


def _halves(clips: list[str], video_of: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Two halves of the clips, whole videos at a time (both people of a two-person video together)."""
    videos = sorted({video_of[c] for c in clips})
    first = set(videos[0::2])
    return [c for c in clips if video_of[c] in first], [c for c in clips if video_of[c] not in first]


def evaluate_run(run: str | Path, out: str | Path, *, manifest, labels: str | Path, stores: Mapping[str, str],
                 smoothing: Mapping[str, Any], device, batch_size: int | None = None, in_memory: bool | None = None,
                 workers: int = 0) -> dict[str, Any]:
    """Predict every frame of every clip with the run's best checkpoint; write predictions.parquet and
    metrics.json into ``out`` (atomically); return the metrics."""
    import json
    import pickle

    import pandas as pd

    from emofusion.io import write_json, write_parquet
    from emofusion.models.checkpoint import model_from_checkpoint, read_checkpoint
    from emofusion.provenance import file_sha256, provenance
    from emofusion.training.data import FusionData, Normaliser
    from emofusion.training.windows import Windowing

    run, out = Path(run), Path(out)
    for name in ("model.pt", "run.json"):
        if not (run / name).is_file():
            raise InputError(f"{run / name} does not exist; train the run first (`emofusion train --out {run}`)")
    info = json.loads((run / "run.json").read_text())
    try:
        ckpt = read_checkpoint(run / "model.pt")
        model = model_from_checkpoint(ckpt)
        extra = {k: ckpt["extra"][k] for k in ("weights_sha256", "normaliser", "best_epoch")}
    except (ValueError, TypeError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        # a truncated, foreign or hand-edited file: torch, the registry or a missing entry says what is wrong
        raise InputError(f"{run / 'model.pt'} is not a usable emofusion checkpoint ({type(e).__name__}: {e}); "
                         f"retrain the run (`emofusion train --out {run}`)") from None
    exp = info["config"]
    windowing = Windowing.from_training(exp["training"], key=f"fusion.experiments.{info['experiment']}.training")
    data = FusionData(manifest=manifest, labels=labels, stores=stores, backbones=exp["stores"], fold=info["fold"],
                      windowing=windowing, weights_sha256=extra["weights_sha256"],
                      normaliser=Normaliser.from_plain(extra["normaliser"]), in_memory=in_memory,
                      check_labels=False)
    model.to(device)
    bs = batch_size or int(exp["training"]["batch_size"])
    raw = predict_frames(model, data, data.clips, device=device, batch_size=bs,
                         amp=exp["training"]["amp"], workers=workers)
    lab = {c: fold_clip_labels(data, c) for c in data.clips}
    candidates = [int(w) for w in smoothing.get("windows", [1])]
    for w in candidates:
        if w > 1 and w % 2 == 0:
            raise ConfigError(f"fusion.smoothing.windows: {w} is even; a centred window must be odd")
    video_of = dict(zip(manifest["clip"], manifest["video_id"], strict=True))
    val = [c for c in data.clips_of("validation") if lab[c][1].any()]
    if val:
        chosen = choose_window({c: raw[c] for c in val}, lab, candidates)
    else:
        chosen = {t: 1 for t in TARGETS}
    smoothed = smooth(raw, chosen)  # train and test: the window chosen on the whole validation split
    a, b = _halves(val, video_of)
    if a and b:
        for fit, apply in ((a, b), (b, a)):
            smoothed.update(smooth({c: raw[c] for c in apply}, choose_window({c: raw[c] for c in fit}, lab,
                                                                             candidates)))
        chosen_on = ("validation (all its labelled clips) for train and test; validation itself cross-fitted: "
                     "windows chosen on one half of its videos applied to the other half, and back")
    else:
        smoothed.update({c: raw[c].copy() for c in val})
        chosen_on = ("validation (all its labelled clips) for train and test; validation has fewer than two "
                     "labelled videos, so its own smoothed figure is unsmoothed (no held-out half to choose on)")
    smoothed = {c: np.clip(v, -1.0, 1.0) for c, v in smoothed.items()}

    splits: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        clips = [c for c in data.clips_of(split) if lab[c][1].any()]
        if not clips:
            continue
        r = split_ccc({c: raw[c] for c in clips}, {c: lab[c][0] for c in clips}, {c: lab[c][1] for c in clips})
        s = split_ccc({c: smoothed[c] for c in clips}, {c: lab[c][0] for c in clips},
                      {c: lab[c][1] for c in clips})
        splits[split] = {"frames": r["frames"], "raw": {k: r[k] for k in (*TARGETS, "mean")},
                         "smoothed": {k: s[k] for k in (*TARGETS, "mean")},
                         "per_clip": {c: {t: v[t] for t in TARGETS} for c, v in r["per_clip"].items()}}

    rows = []
    for c in data.clips:
        y, v = lab[c]
        n = len(y)
        rows.append(pd.DataFrame({
            "clip": c, "split": data.split[c], "frame": np.arange(n, dtype=np.int64),
            "valence": raw[c][:, 0], "arousal": raw[c][:, 1],
            "valence_smoothed": smoothed[c][:, 0], "arousal_smoothed": smoothed[c][:, 1],
            "label_valence": np.where(v[:, 0], y[:, 0], np.nan).astype(np.float32),
            "label_arousal": np.where(v[:, 1], y[:, 1], np.nan).astype(np.float32),
            "valid_valence": v[:, 0], "valid_arousal": v[:, 1]}))
    table = pd.concat(rows, ignore_index=True)
    store_info = {m: {"path": str(p), "sha256": file_sha256(p)} for m, p in stores.items()}
    prov = provenance(config=exp, seed=info["seed"], run=str(run), checkpoint_sha256=file_sha256(run / "model.pt"),
                      stores=store_info)
    metrics = {"experiment": info["experiment"], "model": info["model"], "fold": info["fold"], "seed": info["seed"],
               "splits": splits, "smoothing": {**chosen, "chosen_on": chosen_on, "candidates": sorted(set(candidates))},
               "best_epoch": extra["best_epoch"], "provenance": prov, "stores": store_info}
    write_parquet(out / "predictions.parquet", table, metadata={"provenance": prov})
    write_json(out / "metrics.json", metrics)
    for split, m in splits.items():
        logger.info("%s fold %d seed %d, %s: CCC valence %.3f arousal %.3f mean %.3f (smoothed mean %.3f)",
                    info["experiment"], info["fold"], info["seed"], split, m["raw"]["valence"], m["raw"]["arousal"],
                    m["raw"]["mean"], m["smoothed"]["mean"])
    return metrics
