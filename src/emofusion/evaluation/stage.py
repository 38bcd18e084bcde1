"""Evaluation stage entry (what ``emofusion evaluate`` calls): frame-level predictions from a trained run, CCC per
split (PROTOCOL.md), smoothing chosen on held-out data (:mod:`emofusion.evaluation.smoothing`).

:func:`evaluate_run` writes predictions.parquet and metrics.json of a run folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import ConfigError, InputError
from emofusion.evaluation.smoothing import choose_window, halves, smooth
from emofusion.fusion_data.data import Placement, load_fold
from emofusion.fusion_data.normaliser import Normaliser
from emofusion.fusion_data.predict import fold_clip_labels, predict_frames
from emofusion.fusion_data.windows import Windowing
from emofusion.io import write_json, write_parquet
from emofusion.log import logger
from emofusion.metrics import TARGETS, split_ccc
from emofusion.provenance import file_sha256, provenance
from emofusion.repair import retrain


def read_run_info(run: str | Path) -> dict[str, Any]:
    """``run.json`` of a trained run folder; InputError naming it when the run has not been trained."""
    path = Path(run) / "run.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; train the run first (`{retrain(run)}`)")
    return json.loads(path.read_text())


def evaluate_run(
    run: str | Path,
    out: str | Path,
    *,
    manifest,
    labels: str | Path,
    stores: Mapping[str, str],
    smoothing: Mapping[str, Any],
    device,
    batch_size: int | None = None,
    in_memory: bool | None = None,
    workers: int = 0,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict every frame of every clip with the run's best checkpoint; write predictions.parquet and
    metrics.json into ``out`` (atomically); return the metrics. ``info``: the run's :func:`read_run_info`, when
    the caller has read it already."""
    import pickle

    import pandas as pd

    from emofusion.models.checkpoint import model_from_checkpoint, read_checkpoint

    run, out = Path(run), Path(out)
    if not (run / "model.pt").is_file():
        raise InputError(f"{run / 'model.pt'} does not exist; train the run first (`{retrain(run)}`)")
    if info is None:
        info = read_run_info(run)
    try:
        ckpt = read_checkpoint(run / "model.pt")
        model = model_from_checkpoint(ckpt)
        extra = {k: ckpt["extra"][k] for k in ("weights_sha256", "normaliser", "best_epoch")}
    except (ValueError, TypeError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        # a truncated, foreign or hand-edited file: torch, the registry or a missing entry says what is wrong
        raise InputError(
            f"{run / 'model.pt'} is not a usable emofusion checkpoint ({type(e).__name__}: {e}); "
            f"retrain the run (`{retrain(run)}`)"
        ) from None
    exp = info["config"]
    windowing = Windowing.from_training(exp["training"], key=f"fusion.experiments.{info['experiment']}.training")
    # a run that recorded its training rate: clips at another rate meet the model on that rate's grid, as in
    # training (runs from before: every clip as it is, as they were trained)
    data = load_fold(
        manifest,
        fold=info["fold"],
        windowing=windowing,
        rate=info.get("rate"),
        stores=stores,
        backbones=exp["stores"],
        labels=labels,
        weights_sha256=extra["weights_sha256"],
        normaliser=Normaliser.from_plain(extra["normaliser"]),
        placement=Placement(in_memory=in_memory),
    )
    model.to(device)
    bs = batch_size or int(exp["training"]["batch_size"])
    raw, _ = predict_frames(
        model, data, data.clips, device=device, batch_size=bs, amp=exp["training"]["amp"], workers=workers
    )
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
    a, b = halves(val, video_of)
    if a and b:
        for fit, apply in ((a, b), (b, a)):
            smoothed.update(
                smooth({c: raw[c] for c in apply}, choose_window({c: raw[c] for c in fit}, lab, candidates))
            )
        chosen_on = (
            "validation (all its labelled clips) for train and test; validation itself cross-fitted: "
            "windows chosen on one half of its videos applied to the other half, and back"
        )
    else:
        smoothed.update({c: raw[c].copy() for c in val})
        chosen_on = (
            "validation (all its labelled clips) for train and test; validation has fewer than two "
            "labelled videos, so its own smoothed figure is unsmoothed (no held-out half to choose on)"
        )
    smoothed = {c: np.clip(v, -1.0, 1.0) for c, v in smoothed.items()}
    # Model rows and smoothing above are on the training rate's grid (the windows chosen there are seconds at
    # that rate); scores and the table are on every clip's own frames. Clips at the rate: the same arrays.
    raw = {c: data.to_frames(c, v) for c, v in raw.items()}
    smoothed = {c: data.to_frames(c, v) for c, v in smoothed.items()}
    lab = {c: data.frame_labels(c) for c in data.clips}

    splits: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        clips = [c for c in data.clips_of(split) if lab[c][1].any()]
        if not clips:
            continue
        r = split_ccc({c: raw[c] for c in clips}, {c: lab[c][0] for c in clips}, {c: lab[c][1] for c in clips})
        s = split_ccc({c: smoothed[c] for c in clips}, {c: lab[c][0] for c in clips}, {c: lab[c][1] for c in clips})
        splits[split] = {
            "frames": r["frames"],
            "raw": {k: r[k] for k in (*TARGETS, "mean")},
            "smoothed": {k: s[k] for k in (*TARGETS, "mean")},
            "per_clip": {c: {t: v[t] for t in TARGETS} for c, v in r["per_clip"].items()},
        }

    rows = []
    for c in data.clips:
        y, v = lab[c]
        n = len(y)
        rows.append(
            pd.DataFrame(
                {
                    "clip": c,
                    "split": data.split[c],
                    "frame": np.arange(n, dtype=np.int64),
                    "valence": raw[c][:, 0],
                    "arousal": raw[c][:, 1],
                    "valence_smoothed": smoothed[c][:, 0],
                    "arousal_smoothed": smoothed[c][:, 1],
                    "label_valence": np.where(v[:, 0], y[:, 0], np.nan).astype(np.float32),
                    "label_arousal": np.where(v[:, 1], y[:, 1], np.nan).astype(np.float32),
                    "valid_valence": v[:, 0],
                    "valid_arousal": v[:, 1],
                }
            )
        )
    table = pd.concat(rows, ignore_index=True)
    store_info = {m: {"path": str(p), "sha256": file_sha256(p)} for m, p in stores.items()}
    prov = provenance(
        config=exp, seed=info["seed"], run=str(run), checkpoint_sha256=file_sha256(run / "model.pt"), stores=store_info
    )
    metrics = {
        "experiment": info["experiment"],
        "model": info["model"],
        "fold": info["fold"],
        "seed": info["seed"],
        "splits": splits,
        "smoothing": {**chosen, "chosen_on": chosen_on, "candidates": sorted(set(candidates))},
        "best_epoch": extra["best_epoch"],
        "provenance": prov,
        "stores": store_info,
    }
    write_parquet(out / "predictions.parquet", table, metadata={"provenance": prov})
    write_json(out / "metrics.json", metrics)
    for split, m in splits.items():
        logger.info(
            "%s fold %d seed %d, %s: CCC valence %.3f arousal %.3f mean %.3f (smoothed mean %.3f)",
            info["experiment"],
            info["fold"],
            info["seed"],
            split,
            m["raw"]["valence"],
            m["raw"]["arousal"],
            m["raw"]["mean"],
            m["smoothed"]["mean"],
        )
    return metrics
