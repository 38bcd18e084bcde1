"""emofusion evaluate: frame-level predictions and CCC per split of one trained fusion run."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments, add_runtime_arguments, parse_stores, runtime

NAME = "evaluate"
ORDER = 80
HELP = "predict every frame of every clip with a trained run; CCC per split, raw and smoothed"
DESCRIPTION = """\
Load the run's best checkpoint (model.pt) and run.json, reopen the stores it was trained on (their backbone and
weights checksum must be the ones training saw), apply the checkpoint's normalisation, predict every window of
every clip of the manifest (train, validation and test) and reassemble one prediction per frame (overlapping
windows averaged), clipped to [-1, 1]. CCC per split as the ABAW protocol computes it (all valid frames of all
clips concatenated, float64), for valence, arousal and their mean, raw and smoothed, plus per-clip CCC.
Smoothing: a centred moving average (edges padded with the nearest value) whose window, per target, is chosen
from fusion.smoothing.windows on held-out data only: on the whole validation split for the train and test
figures; the validation figure is cross-fitted (chosen on half of the validation videos, applied to the other
half, and the other way round). Writes into --out:
  predictions.parquet  clip, split, frame, valence, arousal, valence_smoothed, arousal_smoothed,
                       label_valence, label_arousal (NaN where not annotated), valid_valence, valid_arousal
  metrics.json         per split: frames, raw, smoothed, per_clip; smoothing windows and what chose them;
                       best_epoch; stores (path, sha256); provenance"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--run", required=True, help="trained run folder (model.pt, run.json)")
    p.add_argument("--manifest", required=True, help="results/manifest.parquet")
    p.add_argument("--labels", required=True, help="results/labels.h5")
    p.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="MODALITY=PATH",
        help="feature store of a modality (default: the paths the run was trained on)",
    )
    p.add_argument("--out", help="output folder (default: --run)")
    add_runtime_arguments(p)


def run(args: argparse.Namespace) -> int:
    from emofusion.config import load_config
    from emofusion.corpus import read_manifest
    from emofusion.evaluation.stage import evaluate_run, read_run_info
    from emofusion.repair import require_run_folder

    require_run_folder(args.run)  # results/fusion itself is no run to train into
    cfg = load_config(args.config, overrides=args.config_json)
    info = read_run_info(args.run)
    stores = parse_stores(args.store, info["config"], defaults=info["stores"])
    device, in_memory = runtime(args, cfg["fusion"]["device"])
    evaluate_run(
        args.run,
        args.out or args.run,
        manifest=read_manifest(args.manifest),
        labels=args.labels,
        stores=stores,
        smoothing=cfg["fusion"]["smoothing"],
        device=device,
        in_memory=in_memory,
        workers=args.workers,
        info=info,
    )
    return 0
