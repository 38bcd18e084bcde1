"""Real-data check of the audio branch: CCC on ``speech_emotion_va`` (47 utterances, human-rated arousal and valence).

    .venv/bin/python benchmarks/real_va.py                       # egemaps, 5 folds, 3 seeds, a couple of minutes
    .venv/bin/python benchmarks/real_va.py --backbone whisper    # any registered audio backbone
    .venv/bin/python benchmarks/real_va.py --folds 2 --seeds 1 --epochs 1 --limit 12   # smoke run, seconds

Audio only, k-fold cross-validation over utterances (one fixed split, shuffled with --split-seed, shared by every
method). Each recording goes through the project's audio path: decoded by :func:`emofusion.audio.read.load_audio`,
embedded onto a 30 fps frame timeline by the default audio backbone (``build_backbone("audio", name, options)``
with the config schema's defaults; row i describes the window ending at frame i, as the embedding stage does).
Every frame is labelled with its utterance's value. Three methods, all measured in this run on the same folds:

* mean: the training folds' mean of each target (a constant per fold; CCC 0 within a fold);
* ridge: scikit-learn Ridge on the utterance-pooled features (mean over frames), standardised, alpha per target
  chosen by an inner 5-fold CV on the training utterances;
* ``unimodal_audio`` (the project's unimodal baseline on audio: BLSTM + MLP heads) trained on whole utterances
  as frame-level sequences, features z-scored by :class:`emofusion.fusion_data.normaliser.Normaliser` fitted on the
  training utterances' frames, the flat CCC loss (:class:`emofusion.models.CCCLoss`; ``per_sequence`` cannot
  learn here: a constant target has no within-sequence variance, so its CCC and gradient are 0) and the demo
  preset's optimiser settings, one optimisation pass per epoch through
  :func:`emofusion.training.loop.train_epoch`; a fixed number of epochs (no validation split to stop on with 47
  items). Its utterance prediction is the mean over the utterance's frames. Mean ± sd over --seeds seeds.

CCC (:func:`emofusion.metrics.ccc`, population, float64) is computed once over all out-of-fold predictions
pooled (utterance level), and, as a diagnostic, over all out-of-fold frames (each frame's own prediction for the
neural model, its utterance's prediction for the others). Predictions are clipped to [-1, 1] as the evaluation
does. ``--shuffle-labels`` is the control: labels permuted across recordings, every method should land near 0.
``--out results.json`` also writes the figures with their provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofusion.errors import InputError
from emofusion.metrics import TARGETS, ccc

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "speech_emotion_va"
FPS = 30.0
RIDGE_ALPHAS = np.logspace(-2, 4, 13)


# ----------------------------------------------------------------------------------------------------- data


def read_labels(folder: Path) -> tuple[list[str], np.ndarray]:
    """Sorted wav names and their labels ``(N, 2)`` in :data:`~emofusion.metrics.TARGETS` order."""
    columns = {}
    for target in TARGETS:
        path = folder / f"{target}.csv"
        if not path.is_file():
            raise InputError(
                f"{path} does not exist; --data must be the speech_emotion_va folder "
                "(<file>,<value> CSVs arousal.csv and valence.csv beside the wavs)"
            )
        table = pd.read_csv(path, header=None, names=["file", "value"], dtype={"file": str})
        if table["file"].duplicated().any() or not np.isfinite(table["value"].to_numpy(float)).all():
            raise InputError(f"{path}: a file is listed twice or a value is not a number; fix the CSV")
        columns[target] = table.set_index("file")["value"].astype(float)
    files = sorted(columns[TARGETS[0]].index)
    for target in TARGETS[1:]:
        if sorted(columns[target].index) != files:
            raise InputError(f"{folder}: {TARGETS[0]}.csv and {target}.csv list different files")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{folder}: labelled recordings missing: {', '.join(missing[:5])}")
    return files, np.stack([columns[t].loc[files].to_numpy() for t in TARGETS], axis=1)


def embed_recordings(backbone, paths: list[Path], fps: float = FPS) -> list[np.ndarray]:
    """Each recording -> float32 ``(frames, width)`` on a ``fps`` timeline (row i: the window ending at frame i)."""
    from emofusion.audio.read import load_audio

    out = []
    for path in paths:
        samples, rate, _ = load_audio(path)
        frames = max(1, int(len(samples) / rate * fps))  # frames whose time lies inside the recording
        times = np.arange(frames, dtype=np.float64) / fps  # a recording without video: an even timeline
        feats = np.asarray(backbone.embed(samples, rate, times), dtype=np.float32)
        if feats.shape != (frames, backbone.width) or not np.isfinite(feats).all():
            raise InputError(
                f"backbone {backbone.name} gave {feats.shape} (or non-finite values) for {frames} frames of {path}"
            )
        out.append(feats)
    return out


def split(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.arange(n)))


# -------------------------------------------------------------------------------------------------- methods


def mean_predictor(y: np.ndarray, folds) -> np.ndarray:
    pred = np.zeros_like(y)
    for train, test in folds:
        pred[test] = y[train].mean(axis=0)
    return pred


def ridge(pooled: np.ndarray, y: np.ndarray, folds, seed: int) -> tuple[np.ndarray, list[list[float]]]:
    """Out-of-fold ridge predictions and the alpha chosen per fold and target (inner CV on the training fold)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred, alphas = np.zeros_like(y), []
    for train, test in folds:
        chosen = []
        for t in range(y.shape[1]):
            inner = KFold(n_splits=min(5, len(train)), shuffle=True, random_state=seed)
            search = GridSearchCV(
                make_pipeline(StandardScaler(), Ridge()),
                {"ridge__alpha": RIDGE_ALPHAS},
                cv=inner,
                scoring="neg_mean_squared_error",
            )
            search.fit(pooled[train], y[train, t])
            pred[test, t] = search.predict(pooled[test])
            chosen.append(float(search.best_params_["ridge__alpha"]))
        alphas.append(chosen)
    return pred, alphas


def padded(seqs: list[np.ndarray], normaliser) -> tuple[np.ndarray, np.ndarray]:
    """Normalised sequences padded to the longest: ``(N, L, D)`` float32 and the valid mask ``(N, L)``."""
    lengths = np.array([len(s) for s in seqs])
    x = np.zeros((len(seqs), lengths.max(), seqs[0].shape[1]), dtype=np.float32)
    mask = np.arange(lengths.max())[None, :] < lengths[:, None]
    x[mask] = normaliser.apply("audio", np.concatenate(seqs))  # row-major mask order = concatenation order
    return x, mask


def batch_of(x, mask, y, idx) -> dict[str, Any]:
    """A :func:`train_epoch` batch of utterances ``idx``, trimmed to their longest; every frame labelled."""
    import torch

    length = int(mask[idx].sum(axis=1).max())
    m = torch.from_numpy(mask[idx, :length])
    target = torch.from_numpy(np.repeat(y[idx, None, :], length, axis=1).astype(np.float32))  # (B, L, 2)
    return {
        "feats": {"audio": torch.from_numpy(x[idx, :length])},
        "masks": {"audio": m},
        "target": target,
        "target_mask": m,
    }


def neural(
    seqs: list[np.ndarray], y: np.ndarray, folds, *, seed: int, model_name: str, epochs: int, training: dict[str, Any]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold utterance predictions ``(N, 2)`` and frame predictions (per utterance ``(frames, 2)``)."""
    import torch

    from emofusion.fusion_data.normaliser import Moments, Normaliser
    from emofusion.models import CCCLoss, build_model
    from emofusion.training.loop import train_epoch
    from emofusion.training.model import seed_everything

    device = torch.device("cpu")
    utt = np.zeros_like(y)
    frames: list[np.ndarray] = [np.zeros((len(s), y.shape[1])) for s in seqs]
    bs = int(training["batch_size"])
    for k, (train, test) in enumerate(folds):
        seed_everything(seed * 1000 + k)
        moments = Moments(seqs[0].shape[1])
        moments.add(np.concatenate([seqs[i] for i in train]))  # training utterances' frames only
        mean, std = moments.result()
        normaliser = Normaliser(mean={"audio": mean}, std={"audio": std})
        x_tr, m_tr = padded([seqs[i] for i in train], normaliser)
        model = build_model(model_name, dims={"audio": seqs[0].shape[1]}, n_targets=len(TARGETS))
        opt_cls = torch.optim.AdamW if training["optimizer"] == "adamw" else torch.optim.Adam
        opt = opt_cls(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
        scaler = torch.amp.GradScaler(device.type, enabled=False)
        loss_fn = CCCLoss(reduction="flat")
        for epoch in range(epochs):
            perm = np.random.default_rng([seed, k, epoch]).permutation(len(train))
            batches = (batch_of(x_tr, m_tr, y[train], perm[i : i + bs]) for i in range(0, len(perm), bs))
            train_epoch(
                model,
                batches,
                opt=opt,
                scaler=scaler,
                loss_fn=loss_fn,
                device=device,
                amp=False,
                grad_clip=training["grad_clip"],
            )
        x_te, m_te = padded([seqs[i] for i in test], normaliser)
        model.eval()
        with torch.no_grad():
            out = model({"audio": torch.from_numpy(x_te)}, {"audio": torch.from_numpy(m_te)}).double().numpy()
        out = np.clip(out, -1.0, 1.0)  # (n_test, L, 2)
        for j, i in enumerate(test):
            frames[i] = out[j, : len(seqs[i])]
            utt[i] = frames[i].mean(axis=0)
    return utt, frames


# --------------------------------------------------------------------------------------------------- scoring


def scores(
    utt_pred: np.ndarray, y: np.ndarray, lengths: np.ndarray, frame_pred: list[np.ndarray] | None = None
) -> dict[str, float]:
    """Utterance-level and frame-level CCC per target over all out-of-fold predictions pooled."""
    utt_pred = np.clip(utt_pred, -1.0, 1.0)
    frame_y = np.repeat(y, lengths, axis=0)
    fp = np.concatenate(frame_pred) if frame_pred is not None else np.repeat(utt_pred, lengths, axis=0)
    out = {}
    for i, t in enumerate(TARGETS):
        out[t] = ccc(utt_pred[:, i], y[:, i])
        out[f"frame_{t}"] = ccc(fp[:, i], frame_y[:, i])
    return out


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = runs[0].keys()
    mean = {k: statistics.fmean(r[k] for r in runs) for k in keys}
    sd = {k: statistics.stdev([r[k] for r in runs]) if len(runs) > 1 else 0.0 for k in keys}
    return {"mean": mean, "sd": sd, "runs": runs}


def cell(row: dict[str, Any], key: str) -> str:
    m, sd, n = row["mean"][key], row["sd"][key], len(row["runs"])
    return f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}"


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| method | arousal CCC | valence CCC | frame arousal CCC | frame valence CCC | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {cell(row, 'arousal')} | {cell(row, 'valence')} | {cell(row, 'frame_arousal')} | "
            f"{cell(row, 'frame_valence')} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help=f"the speech_emotion_va folder (default {DATA})")
    p.add_argument("--backbone", default="egemaps", help="registered audio backbone (default egemaps)")
    p.add_argument("--model", default="unimodal_audio", help="model or variant of emofusion.models")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--split-seed", type=int, default=0, help="seed of the fold split (shared by every method)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the neural model (0 .. seeds-1)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the neural model (fixed, no early stopping)")
    p.add_argument("--preset", default="demo_frame", help="fusion.presets entry giving optimiser, lr, batch size")
    p.add_argument("--limit", type=int, default=None, help="only the first N recordings (smoke runs)")
    p.add_argument(
        "--shuffle-labels",
        action="store_true",
        help="control: permute the labels across recordings first (every method should score about 0)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also write the figures and provenance as JSON here")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from emofusion.config import validate_config
    from emofusion.features.backbones import build_backbone

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    defaults = validate_config({"features": {"audio": {"backbones": {args.backbone: {}}}}})
    options = defaults["features"]["audio"]["backbones"][args.backbone]
    presets = defaults["fusion"]["presets"]
    if args.preset not in presets:
        raise SystemExit(f"--preset {args.preset!r}: not a fusion.presets entry; defined: {sorted(presets)}")
    training = {k: presets[args.preset].get(k) for k in ("optimizer", "lr", "weight_decay", "batch_size", "grad_clip")}
    training["weight_decay"] = training["weight_decay"] or 0.0

    files, y = read_labels(args.data)
    files, y = files[: args.limit], y[: args.limit]
    if args.shuffle_labels:
        y = y[np.random.default_rng(args.split_seed).permutation(len(y))]
    if args.folds < 2 or args.folds > len(files):
        raise SystemExit(f"--folds must be between 2 and the {len(files)} recordings, got {args.folds}")
    t0 = time.perf_counter()
    backbone = build_backbone("audio", args.backbone, options)
    seqs = embed_recordings(backbone, [args.data / f for f in files])
    embed_s = time.perf_counter() - t0
    lengths = np.array([len(s) for s in seqs])
    folds = split(len(files), args.folds, args.split_seed)
    config = {
        "data": str(args.data),
        "recordings": len(files),
        "frames": int(lengths.sum()),
        "fps": FPS,
        "backbone": args.backbone,
        "backbone_options": options,
        "width": int(backbone.width),
        "folds": args.folds,
        "split_seed": args.split_seed,
        "model": args.model,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "preset": args.preset,
        "training": training,
        "loss": "ccc flat",
        "ridge_alphas": RIDGE_ALPHAS.tolist(),
        "threads": args.threads,
        "shuffle_labels": args.shuffle_labels,
    }
    print("config:", json.dumps(config, sort_keys=True, default=str))
    print(
        f"embedded {len(files)} recordings ({lengths.sum()} frames at {FPS:g} fps, {backbone.width}-d "
        f"{args.backbone}) in {embed_s:.1f} s"
    )

    rows: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    rows["mean predictor (train-fold mean)"] = {
        **summarise([scores(mean_predictor(y, folds), y, lengths)]),
        "seconds": time.perf_counter() - t0,
    }
    t0 = time.perf_counter()
    pooled = np.stack([s.mean(axis=0) for s in seqs]).astype(np.float64)
    ridge_pred, alphas = ridge(pooled, y, folds, args.split_seed)
    rows["ridge on pooled features"] = {
        **summarise([scores(ridge_pred, y, lengths)]),
        "seconds": time.perf_counter() - t0,
        "alphas": alphas,
    }
    runs, t0 = [], time.perf_counter()
    for seed in range(args.seeds):
        utt, frame_pred = neural(
            seqs, y, folds, seed=seed, model_name=args.model, epochs=args.epochs, training=training
        )
        runs.append(scores(utt, y, lengths, frame_pred))
    rows[f"{args.model} (frames, mean over frames)"] = {**summarise(runs), "seconds": time.perf_counter() - t0}

    print(table(rows))
    print(f"ridge alphas per fold (valence, arousal): {alphas}")
    print(
        f"labels: valence mean {y[:, 0].mean():.3f} sd {y[:, 0].std():.3f}; arousal mean {y[:, 1].mean():.3f} "
        f"sd {y[:, 1].std():.3f}; neural and seconds columns: {args.seeds} seed(s), all folds"
    )
    result = {"config": config, "embed_seconds": embed_s, "methods": rows}
    if args.out is not None:
        from emofusion.io import write_json
        from emofusion.provenance import provenance

        write_json(
            args.out,
            {**result, "provenance": provenance(config=config, seed=args.split_seed, weights=backbone.weights())},
        )
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
