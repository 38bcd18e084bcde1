"""emofusion train: one fusion run (experiment, fold, seed) from the feature stores to its best checkpoint."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments, add_runtime_arguments, parse_stores, runtime

NAME = "train"
ORDER = 70
HELP = "train one fusion experiment on one fold with one seed (resumes a killed run)"
DESCRIPTION = """\
Resolve fusion.experiments.<--experiment> (its preset with the experiment's overrides), check the data before
anything trains (each store was made by the backbone the experiment names and covers every clip of the manifest
with its frame count, no NaN/inf features, the fold has valid labels in train and validation, the windowing fits
the model's seq_len), fit the feature normalisation on the fold's training clips, and train: optimiser, warm-up,
plateau schedule, gradient clipping and early stopping from the preset, float16 autocast on CUDA (or bfloat16,
amp: bf16), seeded and deterministic on the CPU. Features on the device when they fit (fusion.device_data; on the
CPU only when forced), TF32 only with fusion.tf32. The best epoch by validation mean CCC (frames reassembled from
windows) is saved.
Writes into --out:
  model.pt    best checkpoint (plain dict, torch.load(..., weights_only=True)): model, config, state dict,
              normaliser, experiment config, provenance, best epoch and validation mean CCC
  log.jsonl   one JSON object per epoch: epoch, train_loss, val_loss, val_ccc_valence/arousal/mean, lr, seconds
  run.json    experiment, model, fold, seed, modalities, stores, resolved config, provenance
  resume.pt   training state after every epoch, while the run is in progress; a rerun after a kill continues
              from it (same result as an uninterrupted run on the CPU) and removes it at the end"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--experiment", required=True, help="name of a fusion.experiments entry")
    p.add_argument("--fold", type=int, default=0, help="fold (0 = official train/validation split)")
    p.add_argument("--seed", type=int, default=0, help="seed of this run")
    p.add_argument("--manifest", required=True, help="results/manifest.parquet")
    p.add_argument("--labels", required=True, help="results/labels.h5")
    p.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="MODALITY=PATH",
        help="feature store of a modality (default: results/features/<modality>/<backbone>.h5)",
    )
    p.add_argument("--out", required=True, help="run folder, e.g. results/fusion/<experiment>/fold0/seed0")
    add_runtime_arguments(p)


def run(args: argparse.Namespace) -> int:
    from emofusion.config import load_config
    from emofusion.corpus import read_manifest
    from emofusion.training.stage import resolve_experiment, train_run

    cfg = load_config(args.config, overrides=args.config_json)
    experiment = resolve_experiment(cfg["fusion"], args.experiment)
    fusion = cfg["fusion"]
    device, in_memory = runtime(args, fusion["device"], tf32=fusion["tf32"])
    train_run(
        experiment,
        fold=args.fold,
        seed=args.seed,
        out=args.out,
        manifest=read_manifest(args.manifest),
        labels=args.labels,
        stores=parse_stores(args.store, experiment),
        device=device,
        in_memory=in_memory,
        workers=args.workers,
        device_data=fusion["device_data"],
        device_fraction=fusion["device_memory_fraction"],
        compile_model=fusion["compile"],
    )
    return 0
