"""A small synthetic corpus for the fusion stage: manifest, labels.h5 (from real annotation files, as
`emofusion labels` writes it) and feature stores for visual, audio and text written with the store writer.

The audio features carry the labels (the labels plus noise, spread over several dimensions); visual and text are
noise, with faceless and wordless gaps, so a model that learns must lean on audio (as in the demo corpus).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from emofusion.corpus import MANIFEST_COLUMNS
from emofusion.features.store import store_attrs, write_store
from emofusion.labels import write_labels

WIDTHS = {"visual": 12, "audio": 10, "text": 6}
BACKBONES = {"visual": "synthv", "audio": "syntha", "text": "syntht"}
SPLITS = ["train"] * 6 + ["validation"] * 2 + ["test"] * 2


def signal(n: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth valence/arousal in [-0.9, 0.9]: a sum of two slow sines per target, ``(n, 2)``."""
    t = np.arange(n)[:, None]
    periods = rng.uniform(40, 120, size=(2, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(2, 2))
    y = sum(np.sin(2 * np.pi * t / periods[k] + phase[k]) for k in range(2)) / 2
    return (0.9 * y).astype(np.float32)


def make_corpus(
    root: Path,
    *,
    frames: tuple[int, ...] = (150, 170, 190, 160, 140, 180, 175, 165, 150, 130),
    seed: int = 0,
    modalities=("visual", "audio", "text"),
) -> dict:
    """Write the corpus under ``root``; returns ``{"manifest": path, "labels": path, "stores": {m: path},
    "backbones": {m: name}, "values": {clip: (N, 2)}}``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, values, items = [], {}, {m: [] for m in modalities}
    mix = rng.normal(0, 1, size=(2, WIDTHS["audio"]))  # one audio "backbone" for every clip
    for i, (n, split) in enumerate(zip(frames, SPLITS, strict=True)):
        clip = f"clip{i:02d}"
        y = signal(n, rng)
        labels = y.copy()
        labels[rng.integers(0, n - 10) :][:8] = -5.0  # a not-annotated gap
        ann = None
        if split != "test":
            ann = root / "annotations" / f"{clip}.txt"
            ann.parent.mkdir(parents=True, exist_ok=True)
            ann.write_text("valence,arousal\n" + "".join(f"{a:.4f},{b:.4f}\n" for a, b in labels))
        values[clip] = labels
        rows.append(
            {
                "clip": clip,
                "video_id": clip,
                "video": f"{clip}.mp4",
                "audio": f"{clip}.mp4",
                "split": split,
                "fold": -1 if split == "test" else 1 + i % 2,
                "annotation": str(ann) if ann else "",
                "crops": "",
                "subject": "",
                "frames": n,
                "fps": 30.0,
            }
        )
        for m in modalities:
            x = rng.normal(0, 1, size=(n, WIDTHS[m])).astype(np.float32)
            valid = np.ones(n, bool)
            if m == "audio":
                x = (3.0 * y @ mix + 0.3 * x + 5.0).astype(np.float32)  # offset: normalisation must remove it
            else:
                valid[rng.integers(0, n - 20) :][:15] = False  # no face / no word for a while
                x[~valid] = 0.0
            items[m].append((clip, x, valid, 30.0))
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest_path = root / "manifest.parquet"
    manifest.to_parquet(manifest_path)
    labels_path = root / "labels.h5"
    write_labels(manifest, labels_path, max_mismatch=0, provenance={"config": {}})
    stores = {}
    for m in modalities:
        stores[m] = root / "features" / m / f"{BACKBONES[m]}.h5"
        stores[m].parent.mkdir(parents=True, exist_ok=True)
        write_store(
            stores[m],
            items[m],
            store_attrs(
                modality=m,
                backbone=BACKBONES[m],
                width=WIDTHS[m],
                native_rate=0.0,
                timeline="synthetic, per frame",
                weights_sha256="none",
                weights_source="synthetic",
                licence="test data",
                provenance={},
            ),
        )
    return {
        "manifest": manifest_path,
        "labels": labels_path,
        "stores": {m: str(p) for m, p in stores.items()},
        "backbones": {m: BACKBONES[m] for m in modalities},
        "values": values,
        "root": root,
    }


def experiment(
    model: str = "early_fusion",
    *,
    modalities=("visual", "audio"),
    name: str | None = None,
    model_options: dict | None = None,
    **training,
) -> dict:
    """A resolved experiment on the synthetic stores (demo preset with ``training`` overrides)."""
    from emofusion.config import validate_config
    from emofusion.training.experiments import resolve_experiment

    name = name or model
    exp = {
        "model": model,
        "model_options": model_options or {},
        "preset": "demo",
        "training": training,
        "stores": {m: BACKBONES[m] for m in modalities},
    }
    cfg = validate_config({"fusion": {"experiments": {name: exp}}})
    return resolve_experiment(cfg["fusion"], name)


def fold_data(
    manifest,
    *,
    labels,
    stores,
    backbones,
    fold: int,
    windowing,
    weights_sha256=None,
    normaliser=None,
    rate=None,
    check_labels: bool = True,
    **placement,
):
    """One fold's :class:`~emofusion.fusion_data.data.FusionData` built as training (``check_labels``) or
    evaluation builds it (:func:`~emofusion.fusion_data.data.load_fold`); ``placement``: the fields of
    :class:`~emofusion.fusion_data.data.Placement`."""
    from emofusion.fusion_data.data import Placement, load_fold

    return load_fold(
        manifest,
        fold=fold,
        windowing=windowing,
        rate=rate,
        stores=stores,
        backbones=backbones,
        labels=labels,
        weights_sha256=weights_sha256,
        normaliser=normaliser,
        placement=Placement(**placement),
        check_labels=check_labels,
    )
