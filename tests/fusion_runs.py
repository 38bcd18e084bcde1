"""Synthetic but realistic fusion run directories, laid out exactly as the training/evaluation contract says.

Labels are smooth random trajectories in [-1, 1] with `-5` gaps (NaN + invalid); predictions track them with an
experiment-dependent quality plus smooth noise, so the CCCs are what a real evaluation would report for such
predictions (computed here by emofusion.metrics from the rows written to predictions.parquet).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from emofusion.corpus import MANIFEST_COLUMNS, fold_split
from emofusion.io import write_json, write_parquet
from emofusion.metrics import TARGETS, split_ccc
from emofusion.provenance import provenance

# clip -> (split, fold group, frames); a two-person video, a short clip, several test clips.
CLIPS = {
    "10-60-1280x720": ("train", 1, 240),
    "12-24-1920x1080": ("train", 2, 200),
    "video3_left": ("validation", 1, 180),
    "video3_right": ("validation", 1, 180),
    "video5": ("validation", 2, 150),
    "short": ("validation", 2, 40),
    "test_a": ("test", -1, 120),
    "test_b_left": ("test", -1, 90),
    "test_c": ("test", -1, 60),
}


def make_manifest(path: Path, clips: dict[str, tuple[str, int, int]] = CLIPS) -> pd.DataFrame:
    rows = []
    for clip, (split, fold, frames) in sorted(clips.items()):
        video = clip.removesuffix("_left").removesuffix("_right")
        rows.append(
            {
                "clip": clip,
                "video_id": video,
                "video": f"videos/{video}.mp4",
                "audio": f"videos/{video}.mp4",
                "split": split,
                "fold": fold,
                "annotation": None if split == "test" else f"ann/{clip}.txt",
                "crops": None,
                "subject": None,
                "frames": frames,
                "fps": 30.0,
            }
        )
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    write_parquet(path, df)
    return df


def _smooth_walk(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    steps = rng.normal(0.0, scale, size=n + 30)
    walk = np.convolve(np.cumsum(steps), np.ones(15) / 15, mode="valid")[:n]
    return walk - walk.mean()


def labels_for(clip: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames, 2) labels with a -5 gap (NaN, invalid), the same for every run (seeded by the clip id)."""
    rng = np.random.default_rng(sum(map(ord, clip)))
    values = np.stack([np.tanh(_smooth_walk(rng, frames, 0.08) + rng.uniform(-0.3, 0.3)) for _ in TARGETS], axis=1)
    valid = np.ones((frames, 2), dtype=bool)
    start = rng.integers(0, max(1, frames - 20))
    valid[start : start + frames // 8] = False  # a stretch not annotated
    return np.where(valid, values, np.nan).astype(np.float32), valid


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    pad = window // 2
    padded = np.pad(x, (pad, pad), mode="edge")
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def make_run(
    root: Path,
    manifest: pd.DataFrame,
    *,
    experiment: str,
    fold: int,
    seed: int,
    quality: float,
    model: str = "rjca",
    stores: dict[str, str] | None = None,
    epochs: int = 6,
    windows: tuple[int, int] = (5, 11),
) -> Path:
    """Write results/fusion/<experiment>/fold<fold>/seed<seed>/ under ``root``; return the run directory."""
    stores = stores or {"visual": "results/features/visual/fer.h5", "audio": "results/features/audio/egemaps.h5"}
    run = root / experiment / f"fold{fold}" / f"seed{seed}"
    run.mkdir(parents=True)
    rng = np.random.default_rng([seed, fold, sum(map(ord, experiment))])
    split = fold_split(manifest, fold)
    parts = []
    for (clip, frames), sp in zip(zip(manifest["clip"], manifest["frames"], strict=True), split, strict=True):
        labels, valid = labels_for(clip, int(frames))
        if sp == "test":
            valid[:] = False
            labels[:] = np.nan
        truth = np.nan_to_num(labels_for(clip, int(frames))[0], nan=0.0)
        raw = np.clip(
            quality * truth
            + (1 - quality) * np.stack([np.tanh(3 * _smooth_walk(rng, int(frames), 0.05)) for _ in TARGETS], axis=1)
            + 0.05,
            -1,
            1,
        )
        smoothed = np.stack([moving_average(raw[:, i], w) for i, w in enumerate(windows)], axis=1)
        parts.append(
            pd.DataFrame(
                {
                    "clip": clip,
                    "split": sp,
                    "frame": np.arange(int(frames)),
                    "valence": raw[:, 0].astype(np.float32),
                    "arousal": raw[:, 1].astype(np.float32),
                    "valence_smoothed": smoothed[:, 0].astype(np.float32),
                    "arousal_smoothed": smoothed[:, 1].astype(np.float32),
                    "label_valence": labels[:, 0],
                    "label_arousal": labels[:, 1],
                    "valid_valence": valid[:, 0],
                    "valid_arousal": valid[:, 1],
                }
            )
        )
    preds = pd.concat(parts, ignore_index=True)
    prov = provenance(config={"experiment": experiment, "quality": quality}, seed=seed)
    write_parquet(run / "predictions.parquet", preds, metadata=prov)
    splits = {}
    for sp, rows in preds.groupby("split"):
        if not (rows["valid_valence"] | rows["valid_arousal"]).any():
            continue
        by_clip = dict(list(rows.groupby("clip")))
        labels = {c: r[["label_valence", "label_arousal"]].to_numpy() for c, r in by_clip.items()}
        masks = {c: r[["valid_valence", "valid_arousal"]].to_numpy() for c, r in by_clip.items()}
        entry = {"frames": 0}
        for variant, cols in (("raw", ["valence", "arousal"]), ("smoothed", ["valence_smoothed", "arousal_smoothed"])):
            score = split_ccc({c: r[cols].to_numpy() for c, r in by_clip.items()}, labels, masks)
            entry[variant] = {k: score[k] for k in ("valence", "arousal", "mean")}
            entry["frames"] = score["frames"]
            if variant == "raw":
                entry["per_clip"] = {c: {t: v[t] for t in TARGETS} for c, v in score["per_clip"].items()}
        splits[sp] = entry
    write_json(
        run / "metrics.json",
        {
            "experiment": experiment,
            "model": model,
            "fold": fold,
            "seed": seed,
            "splits": splits,
            "smoothing": {
                "valence": windows[0],
                "arousal": windows[1],
                "chosen_on": "train split (held out from validation)",
            },
            "best_epoch": epochs - 1,
            "provenance": prov,
            "stores": {m: {"path": p, "sha256": "0" * 64} for m, p in stores.items()},
        },
    )
    write_json(
        run / "run.json",
        {
            "experiment": experiment,
            "model": model,
            "fold": fold,
            "seed": seed,
            "modalities": list(stores),
            "stores": stores,
            "config": {"model": model, "preset": "demo"},
            "provenance": prov,
        },
    )
    (run / "model.pt").write_bytes(b"weights")  # the report reads none of it, but refuses a run without it
    with open(run / "log.jsonl", "w") as f:
        for epoch in range(epochs):
            progress = 1 - np.exp(-(epoch + 1) / 2)
            ccc_v, ccc_a = quality * progress * 0.9, quality * progress * 0.8
            f.write(
                json.dumps(
                    {
                        "epoch": epoch,
                        "train_loss": 2 - 1.5 * progress + 0.02 * rng.normal(),
                        "val_loss": 2 - (ccc_v + ccc_a),
                        "val_ccc_valence": ccc_v,
                        "val_ccc_arousal": ccc_a,
                        "val_ccc_mean": (ccc_v + ccc_a) / 2,
                        "lr": 1e-3,
                        "seconds": 1.5,
                    }
                )
                + "\n"
            )
    return run


def make_runs(root: Path, manifest: pd.DataFrame, *, folds=(0, 1), seeds=(0, 1)) -> list[Path]:
    """Two experiments of different quality over folds x seeds."""
    runs = []
    for experiment, model, quality, stores in (
        ("rjca_demo", "rjca", 0.7, None),
        ("unimodal_audio", "unimodal_audio", 0.35, {"audio": "results/features/audio/egemaps.h5"}),
    ):
        for fold in folds:
            for seed in seeds:
                runs.append(
                    make_run(
                        root,
                        manifest,
                        experiment=experiment,
                        model=model,
                        fold=fold,
                        seed=seed,
                        quality=quality,
                        stores=stores,
                    )
                )
    return runs
